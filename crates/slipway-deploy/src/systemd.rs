//! What slipway writes on an ssh host: the systemd unit (hardened by default) and, per
//! release, a `run` script and an environment file, so that everything a release needs lives
//! in its own directory and a rollback is only a link switch and a restart.

use slipway_model::environment::{Environment, SshTarget};

/// Quotes an argument for the `run` script (POSIX shell).
fn shell(s: &str) -> String {
    crate::ssh::sq(s)
}

/// The unit file: `<service>.service`, or the template `<service>@.service` (one instance per
/// port, `%i`) when the target runs several instances per host.
pub fn unit(env: &Environment, t: &SshTarget, service: &str) -> String {
    let template = t.instances > 1;
    let dir = format!("{}/{service}", t.root);
    let user = match &t.user {
        Some(u) => format!("User={u}\n"),
        None => "DynamicUser=yes\n".to_string(),
    };
    format!(
        "# Written by slipway for environment `{env_name}`; changes are overwritten by the next deploy.\n\
         [Unit]\n\
         Description=slipway: {service}{instance} ({env_name})\n\
         After=network-online.target\n\
         Wants=network-online.target\n\
         \n\
         [Service]\n\
         Type=exec\n\
         ExecStart={dir}/current/run\n\
         EnvironmentFile={dir}/current/env\n\
         {port}\
         WorkingDirectory={dir}/current\n\
         {user}\
         NoNewPrivileges=yes\n\
         ProtectSystem=strict\n\
         ProtectHome=yes\n\
         PrivateTmp=yes\n\
         PrivateDevices=yes\n\
         ProtectKernelTunables=yes\n\
         ProtectKernelModules=yes\n\
         ProtectControlGroups=yes\n\
         RestrictSUIDSGID=yes\n\
         LockPersonality=yes\n\
         Restart=on-failure\n\
         RestartSec=1\n\
         KillMode=control-group\n\
         TimeoutStopSec={grace}\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        env_name = env.name,
        grace = env.stop_grace.as_secs().max(1),
        instance = if template { " on port %i" } else { "" },
        port = if template { "Environment=PORT=%i\n" } else { "" },
    )
}

/// The release's `run` script: the binary with the service's arguments; `{{port}}` is the
/// port, or `$PORT` at run time for a template unit's instances (`port` is `None`).
pub fn run_script(env: &Environment, release_dir: &str, binary: &str, port: Option<u16>) -> String {
    let args: Vec<String> = env
        .service
        .args
        .iter()
        .map(|a| match port {
            Some(p) => shell(&a.replace("{{port}}", &p.to_string())),
            None => shell(a).replace("{{port}}", "'\"$PORT\"'"),
        })
        .collect();
    let cd = env.service.workdir.as_ref().map(|w| format!("cd {} || exit 1\n", shell(w))).unwrap_or_default();
    format!(
        "#!/bin/sh\n# Written by slipway.\n{cd}exec {} {}\n",
        shell(&format!("{release_dir}/{binary}")),
        args.join(" ")
    )
}

/// The release's environment file (`KEY=value` lines, systemd's quoting); without `PORT` for
/// a template unit (its `Environment=PORT=%i` gives each instance its own).
pub fn env_file(env: &Environment, version: &str, port: Option<u16>) -> String {
    let mut out = String::from("# Written by slipway.\n");
    let mut vars: Vec<(String, String)> = port.map(|p| ("PORT".to_string(), p.to_string())).into_iter().collect();
    vars.push(("SLIPWAY_ENVIRONMENT".into(), env.name.clone()));
    vars.push(("SLIPWAY_VERSION".into(), version.to_string()));
    vars.extend(env.service.env.iter().cloned());
    for (k, v) in vars {
        let v = v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
        out.push_str(&format!("{k}=\"{v}\"\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_script_quotes_arguments() {
        let mut env = crate::tests::env();
        env.service.args = vec!["--addr".into(), "127.0.0.1:{{port}}".into(), "it's".into()];
        let s = run_script(&env, "/opt/slipway/app/releases/v1", "app", Some(9000));
        assert!(s.ends_with("exec '/opt/slipway/app/releases/v1/app' '--addr' '127.0.0.1:9000' 'it'\\''s'\n"), "{s}");
        let t = run_script(&env, "/opt/slipway/app/releases/v1", "app", None);
        assert!(t.contains("'127.0.0.1:'\"$PORT\"''"), "{t}");
        let e = env_file(&env, "v1", Some(9000));
        assert!(e.contains("PORT=\"9000\"\nSLIPWAY_ENVIRONMENT=\"dev\"\nSLIPWAY_VERSION=\"v1\"\n"), "{e}");
    }
}
