//! `ferry doctor`: what this kernel offers and what ferry will do with it.

use std::process::ExitCode;

use anyhow::Result;
use ferry::Engine;
use serde_json::json;

pub fn run(as_json: bool) -> Result<ExitCode> {
    let p = ferry::probe_report();
    let memlock = ferry::system::memlock_limit().ok();
    let pipe_max = ferry::system::pipe_max_size();
    let engine = Engine::new();
    let fmt_lim = |v: u64| {
        if v == u64::MAX {
            "unlimited".to_string()
        } else {
            format!("{} KiB", v / 1024)
        }
    };
    let (uring_line, flags, ops) = match &p.uring {
        Ok(r) => (
            "available".to_string(),
            json!({"sq_entries": r.setup.sq_entries, "cq_entries": r.setup.cq_entries}),
            r.ops.iter().map(|(n, ok)| json!({"op": n, "supported": ok})).collect::<Vec<_>>(),
        ),
        Err(why) => (format!("unavailable: {why}"), json!(null), Vec::new()),
    };
    let info = engine.as_ref().ok().map(|e| e.info());
    let pairs = engine.as_ref().ok().map(|e| {
        let (small, why_small) = e.auto_mode(64 * 1024, false, false);
        let (big, why_big) = e.auto_mode(1 << 30, false, false);
        let (reflink, why_reflink) = e.auto_mode(1 << 30, false, true);
        let (direct, why_direct) = e.auto_mode(1 << 30, true, false);
        vec![
            ("file->file (small)", small, why_small),
            ("file->file (large)", big, why_big),
            ("file->file (large, reflink fs)", reflink, why_reflink),
            ("file->file (O_DIRECT)", direct, why_direct),
            ("file->socket", e.auto_net_mode(false, true).0, e.auto_net_mode(false, true).1),
            ("socket->file", e.auto_net_mode(true, false).0, e.auto_net_mode(true, false).1),
            ("socket->socket", e.auto_net_mode(true, true).0, e.auto_net_mode(true, true).1),
        ]
    });
    if as_json {
        let v = json!({
            "kernel": p.kernel,
            "io_uring": uring_line,
            "probe": flags,
            "opcodes": ops,
            "memlock": memlock.map(|(s, h)| json!({"soft": s, "hard": h})),
            "pipe_max_size": pipe_max,
            "engine": info.as_ref().map(|i| json!({
                "backend": i.backend.as_str(), "reason": i.backend_reason, "workers": i.workers,
                "chunk": i.chunk, "depth": i.depth, "buffers_per_worker": i.buffers_per_worker,
                "buffers_registered": i.buffers_registered.as_ref().map(|_| "yes".to_string()).unwrap_or_else(|e| e.clone()),
                "setup_flags": i.setup_flags,
            })),
            "engine_error": engine.as_ref().err().map(|e| e.to_string()),
            "auto_modes": pairs.as_ref().map(|ps| ps.iter().map(|(k, m, w)| json!({"pair": k, "mode": m.as_str(), "why": w})).collect::<Vec<_>>()),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("kernel            {}", p.kernel);
    println!("io_uring          {uring_line}");
    if let Ok(r) = &p.uring {
        let (yes, no): (Vec<_>, Vec<_>) = r.ops.iter().partition(|(_, ok)| *ok);
        println!("opcodes probed    {}", yes.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(" "));
        if !no.is_empty() {
            println!("opcodes missing   {}", no.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(" "));
        }
    }
    if let Some((s, h)) = memlock {
        println!("memlock limit     soft {} / hard {}", fmt_lim(s), fmt_lim(h));
    }
    println!("pipe max size     {}", pipe_max.map_or("unknown".into(), |v| format!("{} KiB", v / 1024)));
    match (&engine, &info) {
        (Ok(_), Some(i)) => {
            println!("backend           {} ({})", i.backend, i.backend_reason);
            println!(
                "ring setup flags  {}",
                if i.setup_flags.is_empty() { "-".into() } else { i.setup_flags.join(" ") }
            );
            println!(
                "workers           {} (chunk {} KiB, depth {}, {} buffers each)",
                i.workers,
                i.chunk / 1024,
                i.depth,
                i.buffers_per_worker
            );
            match &i.buffers_registered {
                Ok(()) => println!("buffers           registered with the ring"),
                Err(e) => println!("buffers           not registered: {e}"),
            }
        }
        (Err(e), _) => println!("engine            cannot start: {e}"),
        _ => {}
    }
    if let Some(ps) = pairs {
        for (pair, m, why) in ps {
            println!("auto {pair:<30} {m}: {why}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
