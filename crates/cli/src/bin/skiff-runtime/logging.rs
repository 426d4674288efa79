//! Errors for callers: one line on stderr, and with `--log` one line in the log file,
//! as JSON (`{"level","msg","time"}`, which containerd reads back) or text.

use std::io::Write;
use std::path::PathBuf;

use skiff_runtime::container::now_ms;
use skiff_runtime::container::rfc3339_ms;

use crate::cli::LogFormat;

pub struct Log {
    path: Option<PathBuf>,
    format: LogFormat,
}

impl Log {
    pub fn new(path: Option<PathBuf>, format: LogFormat) -> Self {
        Self { path, format }
    }

    pub fn line(format: LogFormat, level: &str, msg: &str) -> String {
        let time = rfc3339_ms(now_ms());
        match format {
            LogFormat::Json => {
                serde_json::json!({"level": level, "msg": msg, "time": time}).to_string()
            }
            LogFormat::Text => format!("time=\"{time}\" level={level} msg={msg:?}"),
        }
    }

    pub fn error(&self, msg: &str) {
        eprintln!("skiff-runtime: {msg}");
        if let Some(p) = &self.path {
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
            {
                let _ = writeln!(f, "{}", Self::line(self.format, "error", msg));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_carry_level_msg_and_time() {
        let l: serde_json::Value = serde_json::from_str(&Log::line(
            LogFormat::Json,
            "error",
            "container x does not exist",
        ))
        .unwrap();
        assert_eq!(l["level"], "error");
        assert_eq!(l["msg"], "container x does not exist");
        assert!(l["time"].as_str().unwrap().contains('T'));
    }
}
