use std::collections::HashSet;

pub fn bind_child_to_parent(cmd: &mut tokio::process::Command) {
    cmd.process_group(0);
    // SAFETY: prctl is async-signal-safe, and this closure runs in the child between fork and
    // exec, touching no memory shared with the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() == 1 {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

pub fn signal(pid: u32, sig: i32) {
    if let Ok(pid) = i32::try_from(pid) {
        // SAFETY: kill has no memory effects; a stale pid at worst gets ESRCH.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// Distinct (physical id, core id) pairs in /proc/cpuinfo, capped by the CPUs this process
/// may run on (cgroups and affinity).
pub fn physical_cores() -> Option<usize> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mut cores = HashSet::new();
    let mut phys = String::new();
    for line in info.lines() {
        let mut kv = line.splitn(2, ':').map(str::trim);
        match (kv.next(), kv.next()) {
            (Some("physical id"), Some(v)) => phys = v.to_string(),
            (Some("core id"), Some(v)) => {
                cores.insert((phys.clone(), v.to_string()));
            }
            _ => {}
        }
    }
    let allowed = std::thread::available_parallelism().map_or(usize::MAX, |n| n.get());
    (!cores.is_empty()).then(|| cores.len().min(allowed))
}

/// MemTotal and MemAvailable from /proc/meminfo, capped by a cgroup v2 memory limit.
pub fn memory() -> Option<(u64, u64)> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = info.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    };
    let (mut total, mut avail) = (field("MemTotal:")?, field("MemAvailable:")?);
    if let Ok(limit) = std::fs::read_to_string("/sys/fs/cgroup/memory.max") {
        if let Ok(limit) = limit.trim().parse::<u64>() {
            let used = std::fs::read_to_string("/sys/fs/cgroup/memory.current")
                .ok()
                .and_then(|u| u.trim().parse::<u64>().ok())
                .unwrap_or(0);
            total = total.min(limit);
            avail = avail.min(limit.saturating_sub(used));
        }
    }
    Some((total, avail))
}

pub fn cpu_info() -> super::CpuInfo {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        info.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    let flags = field("flags")
        .or_else(|| field("Features"))
        .unwrap_or_default();
    let has = |f: &str| flags.split_whitespace().any(|x| x == f);
    let simd = if has("avx512f") {
        "AVX-512"
    } else if has("avx2") {
        "AVX2"
    } else if has("avx") {
        "AVX"
    } else if has("sse4_2") {
        "SSE4.2"
    } else if has("asimd") || cfg!(target_arch = "aarch64") {
        "NEON"
    } else {
        "none"
    };
    let quota = std::fs::read_to_string("/sys/fs/cgroup/cpu.max")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace();
            let (q, p) = (it.next()?, it.next()?);
            let (q, p) = (q.parse::<f64>().ok()?, p.parse::<f64>().ok()?);
            (p > 0.0).then_some(q / p)
        });
    super::CpuInfo {
        model: field("model name")
            .or_else(|| field("Model"))
            .unwrap_or_else(|| "unknown".into()),
        logical_cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        physical_cores: super::physical_cores(),
        simd: simd.into(),
        cgroup_cpu_quota: quota,
    }
}

pub fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its whole length; gethostname writes at most that much.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Some(String::from_utf8_lossy(&buf[..end]).into_owned())
}

pub fn capture_stdout(mut f: impl FnMut(&str) + Send + 'static) -> std::io::Result<()> {
    use std::io::BufRead;
    use std::os::fd::FromRawFd;
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe fills two descriptors we then own; dup2 replaces fd 1 with the pipe's write
    // end (C's stdout keeps writing to fd 1), after which the original write end is closed.
    let read = unsafe {
        if libc::pipe(fds.as_mut_ptr()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::dup2(fds[1], 1) < 0 {
            let e = std::io::Error::last_os_error();
            libc::close(fds[0]);
            libc::close(fds[1]);
            return Err(e);
        }
        libc::close(fds[1]);
        std::fs::File::from_raw_fd(fds[0])
    };
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(read).lines() {
            match line {
                Ok(l) => f(&l),
                Err(_) => break,
            }
        }
    });
    Ok(())
}

pub fn tcp_peers(port: u16) -> Vec<std::net::SocketAddr> {
    use std::mem::ManuallyDrop;
    use std::os::fd::FromRawFd;
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for fd in dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
    {
        // SAFETY: the stream only borrows the descriptor for two getsockname/getpeername
        // calls and is never dropped, so the descriptor stays open and owned by its owner. A
        // descriptor that is not a socket (or was closed meanwhile) makes the calls fail.
        let s = ManuallyDrop::new(unsafe { std::net::TcpStream::from_raw_fd(fd) });
        if s.local_addr().is_ok_and(|a| a.port() == port) {
            if let Ok(peer) = s.peer_addr() {
                out.push(peer);
            }
        }
    }
    out
}
