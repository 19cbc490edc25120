#!/usr/bin/python3
"""bench_contention.py - cloq on a shared machine: `cloq ppl` and a short `cloq convert` of a
2-layer hidden-1024 model (16 x 256 tokens), alone and beside one busy process per CPU (started
and stopped here), with cloq's default OpenMP waiting (a short spin, GOMP_SPINCOUNT=1000, then
sleep) and with spinning threads (OMP_WAIT_POLICY=ACTIVE; libgomp's own default, 300,000 spins,
behaves alike: cloq before it set the short spin). Prints
wall and CPU seconds (best of REPS runs each) and the ratios busy / alone.

Targets (issue: a job that shares the machine), for the default: wall at most 3.0x alone (fair
share on a fully busy machine is 2x), CPU time at most 1.5x alone.

  bench_contention.py BUILD_DIR [--reps N] [--quick]
      (tests/bench/run.sh runs it, --quick unless BENCH_FULL=1; needs numpy). --quick: the
      spinning comparison for ppl only (a spinning convert beside busy processes takes ~100 s).
"""
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np


def run(cmd, env):
    """wall and CPU (user + sys of the child) seconds of one run"""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    p = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.monotonic() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        sys.exit("bench_contention: %s failed: %s" % (" ".join(cmd), p.stderr.decode()[-500:]))
    return wall, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def best(cmd, env, reps, before=None):
    out = []
    for _ in range(reps):
        if before:
            before()
        out.append(run(cmd, env))
    return min(w for w, _ in out), min(c for _, c in out)


def main(argv):
    build = argv[1] if len(argv) > 1 else "build"
    reps = int(argv[argv.index("--reps") + 1]) if "--reps" in argv else 2
    quick = "--quick" in argv
    cloq = os.path.abspath(os.path.join(build, "cloq"))
    mk = os.path.abspath(os.path.join(build, "tools", "mkmodel"))
    tmp = tempfile.mkdtemp(prefix="cloq_bench_contention.")
    busy = []
    try:
        m = os.path.join(tmp, "m")
        subprocess.run([mk, "--out", m, "--hidden", "1024", "--intermediate", "2752", "--layers", "2",
                        "--heads", "16", "--kv-heads", "16", "--vocab", "4096", "--dtype", "bf16", "--quiet"],
                       check=True)
        w = os.path.join(tmp, "w.npy")
        np.save(w, np.random.default_rng(0).integers(0, 4096, size=(16, 256)).astype(np.int32))
        out = os.path.join(tmp, "o")
        jobs = {
            "ppl": ([cloq, "ppl", m, "--tokens", w], None),
            "convert": ([cloq, "convert", m, "-o", out, "--calib-tokens", w, "--bits", "4", "--group-size",
                         "128", "--rank", "16", "--no-baselines", "--quiet"],
                        lambda: shutil.rmtree(out, ignore_errors=True)),
        }
        ncpu = len(os.sched_getaffinity(0))
        base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
        modes = [("short spin (default)", base), ("spinning (ACTIVE)", dict(base, OMP_WAIT_POLICY="ACTIVE"))]
        res = {}
        for phase in ("alone", "busy"):
            if phase == "busy":
                busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(ncpu)]
                time.sleep(0.5)
            for job, (cmd, before) in jobs.items():
                for mode, env in modes:
                    if quick and job == "convert" and mode.startswith("spinning"):
                        continue
                    res[(job, mode, phase)] = best(cmd, env, reps, before)
            for p in busy:
                p.kill()
                p.wait()
            busy = []
        print("contention: %d busy process(es), one per CPU; best of %d; 2-layer hidden-1024 model, "
              "16 x 256 tokens" % (ncpu, reps))
        print("%-8s %-18s %12s %12s %12s %12s %8s %8s  %s" % ("job", "waiting", "alone wall", "alone CPU",
                                                              "busy wall", "busy CPU", "wall x", "CPU x",
                                                              "target (default: wall <= 3.0x, CPU <= 1.5x)"))
        ok = True
        for job in jobs:
            for mode, _ in modes:
                if (job, mode, "alone") not in res:
                    continue
                aw, ac = res[(job, mode, "alone")]
                bw, bc = res[(job, mode, "busy")]
                wx, cx = bw / aw, bc / ac
                verdict = ""
                if mode.startswith("short"):
                    good = wx <= 3.0 and cx <= 1.5
                    ok &= good
                    verdict = "met" if good else "NOT met"
                print("%-8s %-18s %11.2fs %11.2fs %11.2fs %11.2fs %7.2fx %7.2fx  %s" %
                      (job, mode, aw, ac, bw, bc, wx, cx, verdict))
        # a measurement, not a test: the verdict is printed, the exit status stays 0
        print("contention targets: %s" % ("met" if ok else "NOT met (single runs beside busy processes vary "
                                                           "widely: docs/PERFORMANCE.md section 8)"))
        return 0
    finally:
        for p in busy:
            p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
