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

pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit ends the process at once; nothing in this process runs after it.
    unsafe { libc::_exit(code) }
}

pub fn die_of_broken_pipe() -> ! {
    // SAFETY: restoring SIGPIPE's default action and raising it ends the process; nothing
    // here touches memory.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::raise(libc::SIGPIPE);
        libc::_exit(128 + libc::SIGPIPE)
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
    extern "C" {
        /// C's standard output stream (glibc and musl both export it by this name).
        static mut stdout: *mut libc::FILE;
    }
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe fills two descriptors we then own; dup2 replaces fd 1 with the pipe's write
    // end (C's stdout keeps writing to fd 1), after which the original write end is closed.
    // setvbuf on C's stdout before anything is written through it by this process's threads
    // (the caller captures before starting the library that prints).
    let read = unsafe {
        if libc::pipe(fds.as_mut_ptr()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if fds.contains(&1) || libc::dup2(fds[1], 1) < 0 {
            let e = std::io::Error::other("standard output cannot be replaced (was it closed?)");
            libc::close(fds[0]);
            libc::close(fds[1]);
            return Err(e);
        }
        libc::close(fds[1]);
        // On a pipe C's stdout is fully buffered: lines would arrive only at a flush.
        libc::setvbuf(stdout, std::ptr::null_mut(), libc::_IOLBF, 0);
        std::fs::File::from_raw_fd(fds[0])
    };
    std::thread::spawn(move || {
        let mut r = std::io::BufReader::new(read);
        let mut line = Vec::new();
        loop {
            line.clear();
            match r.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => f(String::from_utf8_lossy(&line).trim_end_matches(['\n', '\r'])),
            }
        }
    });
    Ok(())
}

/// The local or the peer address of a socket descriptor, if it is an IP socket.
fn socket_addr(fd: libc::c_int, peer: bool) -> Option<std::net::SocketAddr> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
    // SAFETY: getsockname/getpeername write at most `len` bytes into the storage, which is
    // large enough for any address; on a descriptor that is not a socket (or was closed) they
    // fail and nothing is read. The storage is reinterpreted only as the family it reports.
    unsafe {
        let mut ss: libc::sockaddr_storage = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        let p = &mut ss as *mut libc::sockaddr_storage as *mut libc::sockaddr;
        let r = if peer {
            libc::getpeername(fd, p, &mut len)
        } else {
            libc::getsockname(fd, p, &mut len)
        };
        if r != 0 {
            return None;
        }
        match ss.ss_family as libc::c_int {
            libc::AF_INET => {
                let a = &*(p as *const libc::sockaddr_in);
                let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
                Some(SocketAddr::new(IpAddr::V4(ip), u16::from_be(a.sin_port)))
            }
            libc::AF_INET6 => {
                let a = &*(p as *const libc::sockaddr_in6);
                let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
                Some(SocketAddr::new(IpAddr::V6(ip), u16::from_be(a.sin6_port)))
            }
            _ => None,
        }
    }
}

fn set_opt(fd: libc::c_int, level: libc::c_int, name: libc::c_int, value: libc::c_int) {
    // SAFETY: setsockopt reads one int; a failure (not a TCP socket) changes nothing.
    unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &value as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

pub fn tcp_clients(port: u16, dead_after: std::time::Duration) -> Vec<std::net::SocketAddr> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    let secs = dead_after.as_secs().clamp(3, 3600) as libc::c_int;
    let mut out = Vec::new();
    for fd in dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
    {
        if socket_addr(fd, false).is_none_or(|a| a.port() != port) {
            continue;
        }
        let Some(peer) = socket_addr(fd, true) else {
            continue; // the listening socket
        };
        // Probes after 2/5 of the time idle, 3 of them 1/5 apart; and no more than the
        // whole time for data the peer does not acknowledge.
        set_opt(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1);
        set_opt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_KEEPIDLE,
            (secs * 2 / 5).max(1),
        );
        set_opt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_KEEPINTVL,
            (secs / 5).max(1),
        );
        set_opt(fd, libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 3);
        set_opt(fd, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, secs * 1000);
        out.push(peer);
    }
    out
}
