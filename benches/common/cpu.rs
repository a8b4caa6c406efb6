//! CPU time, so that a benchmark can say what bounds it. On a small machine that also runs the
//! server, two transfers of the same bytes can only differ in speed as much as they differ in the
//! CPU the whole machine spends on them; measuring that spend turns "the server shares the cores"
//! from a guess into a figure. Linux only (`/proc`); elsewhere the figures are absent.
#![allow(dead_code)]

use std::time::Instant;

/// CPU seconds this process has used (user + system, all threads).
pub fn self_cpu() -> f64 {
    // SAFETY: getrusage only writes into the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(u.ru_utime) + secs(u.ru_stime)
}

/// CPU seconds process `pid` has used (utime + stime from `/proc/PID/stat`).
pub fn process_cpu(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which is parenthesised and may contain spaces.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / clock_ticks())
}

/// CPU seconds the whole machine has spent busy (every core, every process, the kernel), from the
/// first line of `/proc/stat`.
pub fn machine_busy() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let f: Vec<f64> = line
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let busy: f64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| f.get(i)).sum();
    Some(busy / clock_ticks())
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

/// The cores the machine has.
pub fn cores() -> f64 {
    std::thread::available_parallelism().map_or(1, |n| n.get()) as f64
}

/// A timed run: wall time, the machine's busy CPU time over it, and this process's (the
/// client's) CPU time.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub secs: f64,
    pub busy: Option<f64>,
    pub own: f64,
}

/// Started by [`Span::start`], ended by [`Span::stop`].
pub struct Span {
    t: Instant,
    busy: Option<f64>,
    own: f64,
}

impl Span {
    pub fn start() -> Span {
        Span {
            busy: machine_busy(),
            own: self_cpu(),
            t: Instant::now(),
        }
    }

    pub fn stop(self) -> Sample {
        let secs = self.t.elapsed().as_secs_f64();
        let busy = match (self.busy, machine_busy()) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        };
        Sample {
            secs,
            busy,
            own: self_cpu() - self.own,
        }
    }
}

/// Medians of wall time and of machine CPU over `samples`.
pub fn medians(samples: &[Sample]) -> Sample {
    let mid = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        v.get(v.len() / 2).copied()
    };
    Sample {
        secs: mid(samples.iter().map(|s| s.secs).collect()).unwrap_or(f64::NAN),
        busy: mid(samples.iter().filter_map(|s| s.busy).collect()),
        own: mid(samples.iter().map(|s| s.own).collect()).unwrap_or(f64::NAN),
    }
}

/// Table cells for a raw run and a tarvault run of the same work: machine CPU seconds of each,
/// of that the client's (this process), how busy the raw run kept the machine, and the
/// tarvault/raw ratio the CPU spend allows once the machine is saturated (raw CPU / tarvault CPU).
pub fn cells(raw: Sample, tv: Sample) -> String {
    let own = format!("{:.2} / {:.2}", raw.own, tv.own);
    match (raw.busy, tv.busy) {
        (Some(r), Some(t)) if t > 0.0 => format!(
            "{r:.2} / {t:.2} | {own} | {:.0}% | {:.2}x",
            100.0 * r / (raw.secs * cores()),
            r / t
        ),
        _ => format!("? | {own} | ? | ?"),
    }
}

/// Header cells matching [`cells`].
pub const HEADER: &str =
    "machine CPU s, raw / tarvault | client's share | raw run's load | CPU-bound ratio";
