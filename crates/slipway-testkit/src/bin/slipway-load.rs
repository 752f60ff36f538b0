//! `slipway-load URL [--rate N] [--duration 5s] [--connections N] [--stop-file FILE]`: the
//! load generator for benchmarks; prints its tally as one JSON object.

fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let mut load = slipway_testkit::load::Load::new("", 200, std::time::Duration::from_secs(5));
    let usage = "usage: slipway-load URL [--rate N] [--duration SECONDSs] [--connections N] [--stop-file FILE]";
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{a} needs a value; {usage}"));
        match a.as_str() {
            "--rate" => load.rate = value().parse().expect("--rate: a number"),
            "--duration" => {
                let v = value();
                let secs: f64 = v.trim_end_matches('s').parse().expect("--duration: seconds, e.g. 5s");
                load.duration = std::time::Duration::from_secs_f64(secs);
            }
            "--connections" => load.connections = value().parse().expect("--connections: a number"),
            "--stop-file" => load.stop_file = Some(value().into()),
            url if !url.starts_with('-') && load.url.is_empty() => load.url = url.to_string(),
            other => {
                eprintln!("slipway-load: unknown argument `{other}`; {usage}");
                return std::process::ExitCode::from(2);
            }
        }
    }
    if load.url.is_empty() {
        eprintln!("{usage}");
        return std::process::ExitCode::from(2);
    }
    match slipway_testkit::load::run(&load) {
        Ok(v) => {
            println!("{v}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("slipway-load: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
