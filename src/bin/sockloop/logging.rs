//! The logger: `env_logger` on stderr, filtered by `RUST_LOG` (default `info`), in one
//! of two formats — env_logger's own text, or one JSON object per line.
//!
//! A JSON line holds `ts` (RFC 3339, UTC, milliseconds), `level`, `target` and `msg`,
//! then the record's structured fields (the `log` crate's key-values: `conn`, `peer`,
//! `listener`, `reason`, `stats`, …) as JSON values: numbers stay numbers. A record
//! carrying the counters (`stats`) has `"msg":"stats"`: the text rendering of the
//! counters would only repeat the object beside it.

use std::fmt;
use std::io::{self, Write};

use clap::ValueEnum;
use env_logger::fmt::Formatter;
use log::Record;
use log::kv::{Key, Value, VisitSource};
use serde_json::Map;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    // Plain comments, not doc comments: clap would list documented values in a
    // "Possible values" block and switch all of `--help` to its long layout.
    // Text lines, for people.
    #[default]
    Text,
    // One JSON object per line, for log collectors.
    Json,
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// Installs the logger. Called once, after the command line is read (the format is an
/// option of it) and before anything is logged.
pub(crate) fn init(format: LogFormat) {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if format == LogFormat::Json {
        builder.format(write_json);
    }
    builder.init();
}

/// Writes one record as one JSON object and a newline.
fn write_json(buf: &mut Formatter, record: &Record<'_>) -> io::Result<()> {
    let line = json_line(&buf.timestamp_millis().to_string(), record);
    // One write of the whole line: lines from several workers never interleave.
    buf.write_all(line.as_bytes())
}

/// The JSON line of a record (with its newline), `ts` given.
fn json_line(ts: &str, record: &Record<'_>) -> String {
    let mut fields = Fields::default();
    // A field that cannot be read leaves the others; the message itself is never lost.
    let _ = record.key_values().visit(&mut fields);
    let msg = if fields.0.contains_key("stats") {
        "stats".to_string()
    } else {
        record.args().to_string()
    };
    // serde_json's map sorts its keys; the fixed ones come first for a reader's eye,
    // so the object is written pair by pair.
    let head: [(&str, serde_json::Value); 4] = [
        ("ts", ts.into()),
        ("level", record.level().as_str().into()),
        ("target", record.target().into()),
        ("msg", msg.into()),
    ];
    let mut line = String::with_capacity(256);
    line.push('{');
    for (i, (k, v)) in head
        .iter()
        .map(|(k, v)| (*k, v))
        .chain(fields.0.iter().map(|(k, v)| (k.as_str(), v)))
        .enumerate()
    {
        if i > 0 {
            line.push(',');
        }
        // Serialising a string or a `Value` into a string cannot fail.
        line.push_str(&serde_json::to_string(k).unwrap_or_default());
        line.push(':');
        line.push_str(&serde_json::to_string(v).unwrap_or_else(|_| "null".into()));
    }
    line.push_str("}\n");
    line
}

/// A record's key-values as JSON values.
#[derive(Default)]
struct Fields(Map<String, serde_json::Value>);

impl<'kvs> VisitSource<'kvs> for Fields {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
        // Numbers and strings serialise as themselves, `Display` captures (`peer:% =`)
        // as strings, `serde` captures (`stats:serde =`) as what they are.
        let value = serde_json::to_value(&value)
            .unwrap_or_else(|_| serde_json::Value::String(value.to_string()));
        self.0.insert(key.as_str().to_string(), value);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> serde_json::Value {
        assert!(
            line.ends_with('\n') && line.matches('\n').count() == 1,
            "{line}"
        );
        serde_json::from_str(line).expect("a JSON object")
    }

    #[test]
    fn a_plain_record_has_the_four_fixed_fields_in_order() {
        let line = json_line(
            "2026-01-02T03:04:05.678Z",
            &Record::builder()
                .args(format_args!("serving \"echo\"\non 2 listener(s)"))
                .level(log::Level::Info)
                .target("sockloop::serve")
                .build(),
        );
        assert!(line.starts_with(r#"{"ts":"2026-01-02T03:04:05.678Z","level":"INFO","#));
        let v = parse(&line);
        assert_eq!(v["target"], "sockloop::serve");
        assert_eq!(v["msg"], "serving \"echo\"\non 2 listener(s)");
        assert_eq!(v.as_object().map(Map::len), Some(4));
    }

    #[test]
    fn key_values_keep_their_types() {
        let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 4000));
        let kvs: [(&str, Value); 3] = [
            ("conn", Value::from(7u64)),
            ("peer", Value::from_display(&peer)),
            ("reason", Value::from("idle timeout")),
        ];
        let line = json_line(
            "t",
            &Record::builder()
                .args(format_args!(
                    "conn 7 from 127.0.0.1:4000: closed (idle timeout)"
                ))
                .level(log::Level::Debug)
                .key_values(&kvs)
                .build(),
        );
        let v = parse(&line);
        assert_eq!(v["conn"], 7);
        assert_eq!(v["peer"], "127.0.0.1:4000");
        assert_eq!(v["reason"], "idle timeout");
        assert_eq!(
            v["msg"],
            "conn 7 from 127.0.0.1:4000: closed (idle timeout)"
        );
    }

    #[test]
    fn the_counters_are_an_object_of_numbers() {
        let counters: Map<String, serde_json::Value> = [
            ("accepted".to_string(), 3.into()),
            ("polls".to_string(), 9.into()),
        ]
        .into_iter()
        .collect();
        let kvs = [("stats", Value::from_serde(&counters))];
        let line = json_line(
            "t",
            &Record::builder()
                .args(format_args!("stats accepted=3 polls=9"))
                .level(log::Level::Info)
                .key_values(&kvs)
                .build(),
        );
        let v = parse(&line);
        assert_eq!(v["msg"], "stats");
        assert_eq!(v["stats"]["accepted"], 3);
        assert_eq!(v["stats"]["polls"], 9);
    }
}
