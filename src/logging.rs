//! Log lines: wall-clock time with milliseconds, the thread (`s<id>/<role>`),
//! the level, the event. Role threads are named so every line says who spoke.

use std::io::Write;

pub fn init(level: log::LevelFilter) {
    let _ = env_logger::Builder::new()
        .filter_level(level)
        .format(|buf, record| {
            let thread = std::thread::current();
            writeln!(
                buf,
                "{} {} {:5} {}",
                buf.timestamp_millis(),
                thread.name().unwrap_or("main"),
                record.level(),
                record.args()
            )
        })
        .try_init();
}
