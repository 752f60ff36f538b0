//! Reading columns the same way from either database's rows, so each record is mapped once.

use sqlx::Row as _;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;

/// The column types slipway stores: 64-bit integers and text, each maybe NULL.
pub(crate) trait Columns {
    fn i64(&self, col: &str) -> i64;
    fn opt_i64(&self, col: &str) -> Option<i64>;
    fn text(&self, col: &str) -> String;
    fn opt_text(&self, col: &str) -> Option<String>;
}

macro_rules! columns_for {
    ($row:ty) => {
        impl Columns for $row {
            fn i64(&self, col: &str) -> i64 {
                self.try_get(col).unwrap_or_default()
            }
            fn opt_i64(&self, col: &str) -> Option<i64> {
                self.try_get(col).ok().flatten()
            }
            fn text(&self, col: &str) -> String {
                self.try_get(col).unwrap_or_default()
            }
            fn opt_text(&self, col: &str) -> Option<String> {
                self.try_get(col).ok().flatten()
            }
        }
    };
}

columns_for!(SqliteRow);
columns_for!(PgRow);
