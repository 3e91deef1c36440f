//! What a benchmark run costs beside its speed: the weir process's CPU time per million records
//! over the run's timed window, its peak resident memory, and optionally the CPU time of the
//! services it uses over the same window (the Kafka broker's and the Cassandra node's processes,
//! read from `/proc/<pid>/stat`), so a run shows what each row cost the store as well as weir.

use std::path::Path;
use std::time::Duration;

use super::BenchError;

/// CPU time (user + system) this process has used so far, from `getrusage(RUSAGE_SELF)`.
pub fn process_cpu() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `usage` is a valid, writable `rusage`; RUSAGE_SELF needs no other argument.
    let status = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    if status != 0 {
        return Duration::ZERO;
    }
    // SAFETY: getrusage succeeded, so it filled the struct (zeroed beforehand anyway).
    let usage = unsafe { usage.assume_init() };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// A `kB` field of `/proc/self/status` (`VmHWM`, `VmRSS`), in bytes.
fn status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_status_kib(&status, field).map(|kib| kib * 1024)
}

fn parse_status_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Resets the process's resident-memory high-water mark (`VmHWM`) to its current RSS by writing
/// `5` to `/proc/self/clear_refs` (Linux 4.0 and later); false when the kernel refuses, in which
/// case the mark stays process-wide. Free heap pages that earlier runs left with the allocator
/// go back to the kernel first, so the mark starts from what the process still uses.
pub fn reset_peak_rss() -> bool {
    // SAFETY: `malloc_trim` only returns free memory of glibc's heaps to the kernel.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::malloc_trim(0);
    }
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
        && matches!(
            (status_bytes("VmHWM"), status_bytes("VmRSS")),
            // The mark is back at (about) the current RSS; a page may be touched in between.
            (Some(peak), Some(now)) if peak <= now + (1 << 20)
        )
}

/// A service's process (the Kafka broker, the Cassandra node), whose CPU time a run may also
/// report.
#[derive(Debug, Clone)]
pub struct Service {
    pid: u32,
    /// Clock ticks per second, the unit of `/proc/<pid>/stat`'s times.
    ticks: u64,
}

impl Service {
    /// The process whose pid `pid_file` holds; `what` names the service in errors, and `kept`
    /// says where `scripts/services` keeps its pid file.
    pub fn from_pid_file(what: &str, kept: &str, pid_file: &Path) -> Result<Self, BenchError> {
        let text = std::fs::read_to_string(pid_file).map_err(|e| {
            BenchError::Setup(format!(
                "cannot read the {what}'s pid file {}: {e} (scripts/services keeps it in {kept})",
                pid_file.display()
            ))
        })?;
        let pid: u32 = text.trim().parse().map_err(|_| {
            BenchError::Setup(format!(
                "the {what}'s pid file {} holds `{}`, not a process id",
                pid_file.display(),
                text.trim()
            ))
        })?;
        // SAFETY: sysconf only reads a configuration value.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let service = Service {
            pid,
            ticks: u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100),
        };
        service.cpu().ok_or_else(|| {
            BenchError::Setup(format!(
                "the {what}'s process {pid} from {} is not running or its /proc/{pid}/stat is unreadable",
                pid_file.display()
            ))
        })?;
        Ok(service)
    }

    /// CPU time (user + system) the process has used so far; `None` once it is gone.
    pub fn cpu(&self) -> Option<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        let ticks = parse_stat_ticks(&stat)?;
        Some(Duration::from_secs_f64(ticks as f64 / self.ticks as f64))
    }
}

/// The services whose CPU time a run reports beside weir's, each when its pid file was given.
#[derive(Debug, Clone, Default)]
pub struct Services {
    /// The Kafka broker.
    pub broker: Option<Service>,
    /// The Cassandra node.
    pub cassandra: Option<Service>,
}

impl Services {
    /// The services of `weir bench pipeline`'s `--broker-pid-file` and `--cassandra-pid-file`.
    pub fn from_pid_files(
        broker: Option<&Path>,
        cassandra: Option<&Path>,
    ) -> Result<Self, BenchError> {
        Ok(Services {
            broker: broker
                .map(|file| Service::from_pid_file("broker", ".services/kafka/pid", file))
                .transpose()?,
            cassandra: cassandra
                .map(|file| {
                    Service::from_pid_file("Cassandra node", ".services/cassandra/pid", file)
                })
                .transpose()?,
        })
    }

    fn cpu(&self) -> ServicesCpu {
        ServicesCpu {
            broker: self.broker.as_ref().and_then(Service::cpu),
            cassandra: self.cassandra.as_ref().and_then(Service::cpu),
        }
    }
}

/// The services' CPU time so far, each when metered and still running.
#[derive(Debug, Clone, Copy, Default)]
struct ServicesCpu {
    broker: Option<Duration>,
    cassandra: Option<Duration>,
}

impl ServicesCpu {
    /// What each service used since `start`.
    fn since(self, start: ServicesCpu) -> ServicesCpu {
        let used = |start: Option<Duration>, end: Option<Duration>| end?.checked_sub(start?);
        ServicesCpu {
            broker: used(start.broker, self.broker),
            cassandra: used(start.cassandra, self.cassandra),
        }
    }
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line, in clock ticks. The command
/// name (field 2) is in parentheses and may hold spaces, so fields are counted after its `)`.
fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let (_, after) = stat.rsplit_once(')')?;
    let mut fields = after.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Where a run's peak-memory figure comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeakRss {
    /// `VmHWM`, reset before the run: the run's own peak.
    Reset,
    /// The process-wide `VmHWM` could not be reset: the figure is how much the run raised it.
    Growth,
}

/// Meters one run: created when the run starts (resetting the peak-memory mark), then
/// [`Meter::window_start`] and [`Meter::window_end`] bracket its timed window.
#[derive(Debug)]
pub struct Meter {
    services: Services,
    peak: PeakRss,
    peak_before: u64,
    start: Option<(Duration, ServicesCpu)>,
}

/// What one run cost over its timed window.
#[derive(Debug, Clone, PartialEq)]
pub struct Cost {
    /// Records completed in the window.
    pub records: u64,
    /// The weir process's CPU time in the window.
    pub cpu: Duration,
    /// Peak resident memory of the run in bytes (see `peak_kind`).
    pub peak_rss: u64,
    /// Whether `peak_rss` is the run's own peak or its growth of the process-wide mark.
    pub peak_kind: PeakRss,
    /// The broker's CPU time in the window, when a broker is metered and stayed up.
    pub broker_cpu: Option<Duration>,
    /// The Cassandra node's CPU time in the window, when it is metered and stayed up.
    pub cassandra_cpu: Option<Duration>,
    /// For a run with plugins: the CPU time spent inside plugin calls over the whole run, and
    /// the records given to the plugins meanwhile. The whole run, not the window: on a short
    /// run every call may have finished before the first acknowledgement opens the window.
    pub plugin_cpu: Option<(Duration, u64)>,
}

impl Meter {
    /// Starts metering a run, with the `services` it uses.
    pub fn start(services: &Services) -> Self {
        let peak = if reset_peak_rss() {
            PeakRss::Reset
        } else {
            PeakRss::Growth
        };
        Meter {
            services: services.clone(),
            peak,
            peak_before: status_bytes("VmHWM").unwrap_or(0),
            start: None,
        }
    }

    /// The timed window starts now.
    pub fn window_start(&mut self) {
        self.start = Some((process_cpu(), self.services.cpu()));
    }

    /// The timed window ended now, with `records` completed in it.
    pub fn window_end(&self, records: u64) -> Cost {
        let (cpu_start, services_start) = self.start.unwrap_or_default();
        let services = self.services.cpu().since(services_start);
        let peak = status_bytes("VmHWM").unwrap_or(0);
        Cost {
            records,
            cpu: process_cpu().saturating_sub(cpu_start),
            peak_rss: match self.peak {
                PeakRss::Reset => peak,
                PeakRss::Growth => peak.saturating_sub(self.peak_before),
            },
            peak_kind: self.peak,
            broker_cpu: services.broker,
            cassandra_cpu: services.cassandra,
            plugin_cpu: None,
        }
    }
}

impl Cost {
    /// The weir process's CPU-seconds per million records.
    pub fn cpu_per_million(&self) -> f64 {
        per_million(self.cpu, self.records)
    }

    /// The CPU-seconds spent inside plugin calls per million records given to them, for a run
    /// with plugins.
    pub fn plugin_per_million(&self) -> Option<f64> {
        self.plugin_cpu
            .map(|(cpu, records)| per_million(cpu, records))
    }

    /// The broker's CPU-seconds per million records, when metered.
    pub fn broker_per_million(&self) -> Option<f64> {
        self.broker_cpu.map(|cpu| per_million(cpu, self.records))
    }

    /// The Cassandra node's CPU-seconds per million records, when metered.
    pub fn cassandra_per_million(&self) -> Option<f64> {
        self.cassandra_cpu.map(|cpu| per_million(cpu, self.records))
    }

    /// Peak RSS in MiB.
    pub fn peak_mib(&self) -> f64 {
        self.peak_rss as f64 / f64::from(1 << 20)
    }
}

fn per_million(cpu: Duration, records: u64) -> f64 {
    if records == 0 {
        return 0.0;
    }
    cpu.as_secs_f64() * 1e6 / records as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_times_are_read_after_the_command_name() {
        let stat = "1644 (java main) S 1 1644 1644 0 -1 4194560 9 0 0 0 1607 382 0 0 20 0 90 0";
        assert_eq!(parse_stat_ticks(stat), Some(1607 + 382));
        assert_eq!(parse_stat_ticks("1644 (java"), None);
    }

    #[test]
    fn status_fields_are_read_in_kib() {
        let status = "Name:\tweir\nVmHWM:\t  145208 kB\nVmRSS:\t   13588 kB\n";
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(145_208));
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(13_588));
        assert_eq!(parse_status_kib(status, "VmPeak"), None);
    }

    #[test]
    fn this_process_is_metered() {
        let mut meter = Meter::start(&Services::default());
        meter.window_start();
        // Some CPU work the meter must see: spin until the process has used a millisecond more.
        let until = process_cpu() + Duration::from_millis(1);
        let mut x = 0u64;
        while process_cpu() < until {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let cost = meter.window_end(1000);
        assert!(cost.cpu > Duration::ZERO, "{cost:?}");
        assert!(cost.cpu_per_million() > 0.0);
        assert_eq!(cost.broker_per_million(), None);
        assert_eq!(cost.cassandra_per_million(), None);
        if cost.peak_kind == PeakRss::Reset {
            assert!(cost.peak_rss > 0, "{cost:?}");
        }
    }
}
