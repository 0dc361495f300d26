//! The machine a benchmark ran on, one line that goes next to every figure in
//! BENCHMARKS.md. Used by fw-ctl's benches (through fw-testkit) and by xtask's
//! benches; not behind the `ebpf` feature, so xtask can call it before
//! `cargo xtask setup` has installed bpf-linker.

/// `"<CPU model>; <n> CPUs; <memory> GiB; Linux <release>"`, e.g.
/// `"AMD EPYC 7B13; 2 CPUs; 8 GiB; Linux 6.8.0-45-generic"`.
///
/// Sources: the first `model name` of `/proc/cpuinfo`, the possible CPUs
/// (`/sys/devices/system/cpu/possible`, the width of per-CPU maps; unlike
/// `available_parallelism` not narrowed when the caller pinned itself to one CPU),
/// `MemTotal` of `/proc/meminfo` (KiB, shown in GiB) and
/// `/proc/sys/kernel/osrelease`. A source that cannot be read gives an empty
/// field or 0; this never fails.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let cpus = aya::util::nr_cpus().unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    format!(
        "{cpu}; {cpus} CPUs; {mem_gib:.0} GiB; Linux {}",
        kernel.trim()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_names_cpus_memory_and_kernel() {
        let m = machine();
        assert!(m.contains(" CPUs; "), "{m}");
        assert!(m.contains(" GiB; Linux "), "{m}");
        assert!(!m.contains("; 0 CPUs;"), "{m}");
    }
}
