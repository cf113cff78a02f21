"""Where a JVM's sampled time goes, from a JFR recording (jdk.ExecutionSample, the threads running Java code): the
methods by samples where they are on the stack (inclusive) and at its top (self), for one thread or all.
Run where a JDK is (its `jfr` command), e.g. on a bench's recording made on a GPU host:
  java -XX:StartFlightRecording=filename=b.jfr,settings=profile ... bench ...   (the runtime of dev/gpu/pack-runtime.sh)
  python3 dev/gpu/jfr-top.py b.jfr [--thread main] [--top 40] [--under io/dsflow/engine/cuda/CudaBackend.forwardToDevice]
--under: only samples with that method on their stack (e.g. a step's planning and launch), shares of those; methods
are named as JFR names them (package/Class.method).
"""
import argparse, collections, json, subprocess

ap = argparse.ArgumentParser()
ap.add_argument("recording")
ap.add_argument("--thread", default=None)
ap.add_argument("--top", type=int, default=40)
ap.add_argument("--under", default=None)
a = ap.parse_args()
out = subprocess.run(["jfr", "print", "--json", "--events", "jdk.ExecutionSample", a.recording],
                     capture_output=True, text=True, check=True).stdout
events = json.loads(out)["recording"]["events"]
inclusive, own = collections.Counter(), collections.Counter()
n = 0
for e in events:
    v = e["values"]
    thread = (v.get("sampledThread") or {}).get("javaName")
    if a.thread and thread != a.thread:
        continue
    frames = [f["method"]["type"]["name"] + "." + f["method"]["name"] for f in v["stackTrace"]["frames"]]
    if a.under and a.under not in frames:
        continue
    n += 1
    if frames:
        own[frames[0]] += 1
    for f in set(frames):
        inclusive[f] += 1
print("%d samples%s%s" % (n, " of thread " + a.thread if a.thread else "", " under " + a.under if a.under else ""))
print("inclusive:")
for f, c in inclusive.most_common(a.top):
    print("  %5.1f%%  %s" % (100.0 * c / max(n, 1), f))
print("self:")
for f, c in own.most_common(a.top // 2):
    print("  %5.1f%%  %s" % (100.0 * c / max(n, 1), f))
