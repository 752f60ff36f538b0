//! Test reports and coverage: each attempt's JUnit cases (replaced when the same attempt
//! uploads again), a test's results across pipelines, and a job's coverage with its trend.

use crate::row::Columns;
use crate::{Store, StoreError, now_ms, with_pool};

/// One test case of a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestCase {
    pub suite: String,
    pub classname: String,
    pub name: String,
    /// `passed`, `failed`, `error` or `skipped`.
    pub status: String,
    pub time_ms: i64,
    /// The failure's message and output (bounded by the reader).
    pub message: Option<String>,
}

/// A test case as stored: with the job and attempt it ran in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestCaseRow {
    pub run: i64,
    pub job_index: i64,
    pub attempt: i64,
    pub job_name: String,
    pub case: TestCase,
}

/// A job's coverage in one pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct CoverageRow {
    pub run: i64,
    pub job_index: i64,
    pub job_name: String,
    pub ref_name: Option<String>,
    pub percent: f64,
    pub created_at_ms: i64,
}

fn case_from(r: &impl Columns) -> TestCaseRow {
    TestCaseRow {
        run: r.i64("run_id"),
        job_index: r.i64("job_index"),
        attempt: r.i64("attempt"),
        job_name: r.text("job_name"),
        case: TestCase {
            suite: r.text("suite"),
            classname: r.text("classname"),
            name: r.text("name"),
            status: r.text("status"),
            time_ms: r.i64("time_ms"),
            message: r.opt_text("message"),
        },
    }
}

fn coverage_from(r: &impl Columns) -> CoverageRow {
    CoverageRow {
        run: r.i64("run_id"),
        job_index: r.i64("job_index"),
        job_name: r.text("job_name"),
        ref_name: r.opt_text("ref_name"),
        percent: r.i64("hundredths") as f64 / 100.0,
        created_at_ms: r.i64("created_at"),
    }
}

const CASE_COLUMNS: &str = "run_id, job_index, attempt, job_name, suite, classname, name, status, time_ms, message";

/// A Go package's coverage in a pipeline, and in the pipeline on the same ref before it.
#[derive(Debug, Clone, PartialEq)]
pub struct PackageCoverage {
    pub package: String,
    pub percent: f64,
    pub before: Option<f64>,
}

impl Store {
    /// Records an attempt's test cases, replacing what the same attempt recorded before.
    pub async fn put_test_cases(
        &self,
        run: i64,
        job_index: i64,
        attempt: i64,
        project: &str,
        job_name: &str,
        cases: &[TestCase],
    ) -> Result<(), StoreError> {
        let now = now_ms();
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query("DELETE FROM test_cases WHERE run_id = $1 AND job_index = $2 AND attempt = $3")
                .bind(run)
                .bind(job_index)
                .bind(attempt)
                .execute(&mut *tx)
                .await?;
            for c in cases {
                sqlx::query(
                    "INSERT INTO test_cases (run_id, job_index, attempt, project, job_name, suite, classname, name,
                     status, time_ms, message, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                )
                .bind(run)
                .bind(job_index)
                .bind(attempt)
                .bind(project)
                .bind(job_name)
                .bind(&c.suite)
                .bind(&c.classname)
                .bind(&c.name)
                .bind(&c.status)
                .bind(c.time_ms)
                .bind(&c.message)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// A pipeline's test cases, every attempt of every job.
    pub async fn test_cases(&self, run: i64) -> Result<Vec<TestCaseRow>, StoreError> {
        with_pool!(self, |pool| {
            let rows = sqlx::query(&format!(
                "SELECT {CASE_COLUMNS} FROM test_cases WHERE run_id = $1 ORDER BY job_index, attempt, suite, classname, name"
            ))
            .bind(run)
            .fetch_all(pool)
            .await?;
            Ok(rows.iter().map(case_from).collect())
        })
    }

    /// One test's results in a project's pipelines, newest first.
    pub async fn test_history(
        &self,
        project: &str,
        classname: &str,
        name: &str,
        limit: i64,
    ) -> Result<Vec<TestCaseRow>, StoreError> {
        with_pool!(self, |pool| {
            let rows = sqlx::query(&format!(
                "SELECT {CASE_COLUMNS} FROM test_cases WHERE project = $1 AND classname = $2 AND name = $3
                 ORDER BY run_id DESC, attempt DESC LIMIT $4"
            ))
            .bind(project)
            .bind(classname)
            .bind(name)
            .bind(limit)
            .fetch_all(pool)
            .await?;
            Ok(rows.iter().map(case_from).collect())
        })
    }

    /// Records a job's coverage in a pipeline (its last attempt's).
    pub async fn put_coverage(
        &self,
        run: i64,
        job_index: i64,
        project: &str,
        job_name: &str,
        ref_name: Option<&str>,
        percent: f64,
    ) -> Result<(), StoreError> {
        let hundredths = (percent * 100.0).round() as i64;
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO job_coverage (run_id, job_index, project, job_name, ref_name, hundredths, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (run_id, job_index) DO UPDATE SET hundredths = excluded.hundredths,
                 created_at = excluded.created_at",
            )
            .bind(run)
            .bind(job_index)
            .bind(project)
            .bind(job_name)
            .bind(ref_name)
            .bind(hundredths)
            .bind(now_ms())
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    /// A pipeline's coverage per job.
    pub async fn coverage(&self, run: i64) -> Result<Vec<CoverageRow>, StoreError> {
        with_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT run_id, job_index, job_name, ref_name, hundredths, created_at FROM job_coverage
                 WHERE run_id = $1 ORDER BY job_index",
            )
            .bind(run)
            .fetch_all(pool)
            .await?;
            Ok(rows.iter().map(coverage_from).collect())
        })
    }

    /// A job's coverage in the project's last pipelines on `ref_name`, oldest first.
    pub async fn coverage_trend(
        &self,
        project: &str,
        job_name: &str,
        ref_name: Option<&str>,
        limit: i64,
    ) -> Result<Vec<CoverageRow>, StoreError> {
        with_pool!(self, |pool| {
            let mut rows: Vec<CoverageRow> = sqlx::query(
                "SELECT run_id, job_index, job_name, ref_name, hundredths, created_at FROM job_coverage
                 WHERE project = $1 AND job_name = $2 AND ($3 IS NULL OR ref_name = $3)
                 ORDER BY run_id DESC LIMIT $4",
            )
            .bind(project)
            .bind(job_name)
            .bind(ref_name)
            .bind(limit)
            .fetch_all(pool)
            .await?
            .iter()
            .map(coverage_from)
            .collect();
            rows.reverse();
            Ok(rows)
        })
    }

    /// Records a job's coverage per Go package (replacing what the job recorded before).
    pub async fn put_package_coverage(
        &self,
        run: i64,
        job_index: i64,
        project: &str,
        ref_name: Option<&str>,
        packages: &[(String, f64)],
    ) -> Result<(), StoreError> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query("DELETE FROM package_coverage WHERE run_id = $1 AND job_index = $2")
                .bind(run)
                .bind(job_index)
                .execute(&mut *tx)
                .await?;
            for (package, percent) in packages {
                sqlx::query(
                    "INSERT INTO package_coverage (run_id, job_index, project, package, ref_name, hundredths)
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (run_id, job_index, package) DO NOTHING",
                )
                .bind(run)
                .bind(job_index)
                .bind(project)
                .bind(package)
                .bind(ref_name)
                .bind((percent * 100.0).round() as i64)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// A pipeline's coverage per package, each with its value in the newest earlier pipeline
    /// of the project on the same ref.
    pub async fn package_coverage(&self, run: i64) -> Result<Vec<PackageCoverage>, StoreError> {
        with_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT c.package, MAX(c.hundredths) AS hundredths,
                        (SELECT p.hundredths FROM package_coverage p
                          WHERE p.project = c.project AND p.package = c.package AND p.run_id < c.run_id
                            AND (p.ref_name = c.ref_name OR (p.ref_name IS NULL AND c.ref_name IS NULL))
                          ORDER BY p.run_id DESC LIMIT 1) AS before
                   FROM package_coverage c WHERE c.run_id = $1
                  GROUP BY c.package, c.project, c.run_id, c.ref_name ORDER BY c.package",
            )
            .bind(run)
            .fetch_all(pool)
            .await?;
            Ok(rows
                .iter()
                .map(|r| PackageCoverage {
                    package: r.text("package"),
                    percent: r.i64("hundredths") as f64 / 100.0,
                    before: r.opt_i64("before").map(|b| b as f64 / 100.0),
                })
                .collect())
        })
    }
}
