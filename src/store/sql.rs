//! SQL text per engine, kept `&'static str` (sqlx refuses built strings unless wrapped in
//! `AssertSqlSafe`, and literals keep injection impossible by construction).
//!
//! Most statements are the same on every engine but for the placeholders: SQLite and MySQL write
//! `?`, PostgreSQL `$1, $2, ...`. [`sql!`] takes the `?` form and derives the PostgreSQL form at
//! compile time; [`sql_per_engine!`] takes all three when the SQL itself differs (JSON
//! functions, upserts). Either way the bind list is the same on every engine, in the same order.

/// The metadata database engines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
    MySql,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Sqlite => "SQLite",
            Engine::Postgres => "PostgreSQL",
            Engine::MySql => "MySQL/MariaDB",
        }
    }
}

/// One statement in each engine's dialect.
#[derive(Debug, Clone, Copy)]
pub struct Sql {
    pub sqlite: &'static str,
    pub postgres: &'static str,
    pub mysql: &'static str,
}

impl Sql {
    pub fn of(&self, e: Engine) -> &'static str {
        match e {
            Engine::Sqlite => self.sqlite,
            Engine::Postgres => self.postgres,
            Engine::MySql => self.mysql,
        }
    }
}

/// Length of `sql` with every `?` placeholder (outside '...' literals) numbered `$n`.
pub const fn dollar_len(sql: &str) -> usize {
    let b = sql.as_bytes();
    let (mut i, mut n, mut len, mut quoted) = (0, 0usize, 0, false);
    while i < b.len() {
        if b[i] == b'\'' {
            quoted = !quoted;
        }
        if b[i] == b'?' && !quoted {
            n += 1;
            len += 1 + digits(n);
        } else {
            len += 1;
        }
        i += 1;
    }
    len
}

const fn digits(mut n: usize) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

/// `sql` with `?` placeholders numbered `$1, $2, ...`; `N` must be [`dollar_len`] of it.
pub const fn to_dollar<const N: usize>(sql: &str) -> [u8; N] {
    let b = sql.as_bytes();
    let mut out = [0u8; N];
    let (mut i, mut o, mut n, mut quoted) = (0, 0, 0usize, false);
    while i < b.len() {
        if b[i] == b'\'' {
            quoted = !quoted;
        }
        if b[i] == b'?' && !quoted {
            n += 1;
            out[o] = b'$';
            o += 1;
            let d = digits(n);
            let mut k = 0;
            while k < d {
                let mut p = 1;
                let mut j = 0;
                while j < d - 1 - k {
                    p *= 10;
                    j += 1;
                }
                out[o] = b'0' + ((n / p) % 10) as u8;
                o += 1;
                k += 1;
            }
        } else {
            out[o] = b[i];
            o += 1;
        }
        i += 1;
    }
    out
}

/// The bytes [`to_dollar`] made, as a str (they are the input's UTF-8 plus ASCII).
pub const fn as_str(b: &'static [u8]) -> &'static str {
    match std::str::from_utf8(b) {
        Ok(s) => s,
        Err(_) => panic!("placeholder rewrite produced invalid UTF-8"),
    }
}

/// A statement written once with `?` placeholders, valid on every engine.
macro_rules! sql {
    ($($part:expr),+ $(,)?) => {{
        const Q: &str = concat!($($part),+);
        const N: usize = $crate::store::sql::dollar_len(Q);
        const B: [u8; N] = $crate::store::sql::to_dollar::<N>(Q);
        const S: $crate::store::sql::Sql =
            $crate::store::sql::Sql { sqlite: Q, postgres: $crate::store::sql::as_str(&B), mysql: Q };
        S
    }};
}

/// A statement whose text differs per engine; the PostgreSQL one is written with `?` too and
/// numbered here, so all three keep one bind order.
macro_rules! sql_per_engine {
    (sqlite: $s:expr, postgres: $p:expr, mysql: $m:expr $(,)?) => {{
        const P: &str = $p;
        const N: usize = $crate::store::sql::dollar_len(P);
        const B: [u8; N] = $crate::store::sql::to_dollar::<N>(P);
        const S: $crate::store::sql::Sql =
            $crate::store::sql::Sql { sqlite: $s, postgres: $crate::store::sql::as_str(&B), mysql: $m };
        S
    }};
}

pub(crate) use {sql, sql_per_engine};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_placeholders_for_postgres_and_leaves_the_others() {
        let s = sql!("SELECT a FROM t WHERE b = ? AND c IN (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) AND d = '?'");
        assert_eq!(s.postgres, "SELECT a FROM t WHERE b = $1 AND c IN ($2, $3, $4, $5, $6, $7, $8, $9, $10, $11) AND d = '?'");
        assert_eq!(s.sqlite, s.mysql);
        assert_eq!(s.of(Engine::Sqlite), "SELECT a FROM t WHERE b = ? AND c IN (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) AND d = '?'");
        let e = sql_per_engine!(sqlite: "x ?", postgres: "y ?::jsonb, 'é?' ?", mysql: "z ?");
        assert_eq!((e.sqlite, e.postgres, e.mysql), ("x ?", "y $1::jsonb, 'é?' $2", "z ?"));
        assert_eq!(sql!("no params").postgres, "no params");
    }
}
