# host time between decode steps from ktrace's CSV with driver calls (@name rows): per window from the step's last
# kernel's end to the next embed's start, the driver calls in it by name (count, total us) and what no call covers
import sys, collections
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 10
ks, ds = [], []
for line in open(sys.argv[1]):
    a, b, s, n = line.rstrip('\n').split(',', 3)
    (ds if n.startswith('@') else ks).append((int(a), int(b), int(s), n))
ks.sort(); ds.sort()
emb = [r for r in ks if r[3] == 'embed']
tot = collections.defaultdict(lambda: [0, 0.0]); covered = 0.0; span = 0.0
for i in range(len(emb) - steps - 1, len(emb) - 1):
    t0, t1 = emb[i][0], emb[i + 1][0]
    end = max(r[1] for r in ks if t0 <= r[0] < t1)
    span += (t1 - end) / 1e3
    last = end
    for a, b, s, n in ds:
        if b <= end or a >= t1: continue
        a2, b2 = max(a, end), min(b, t1)
        tot[n][0] += 1; tot[n][1] += (b2 - a2) / 1e3
        if b2 > last: covered += (b2 - max(a2, last)) / 1e3; last = b2
print(f"between steps: {span/steps:.1f} us a step; driver calls cover {covered/steps:.1f}; calls a step:")
for n, (c, t) in sorted(tot.items(), key=lambda kv: -kv[1][1]):
    print(f"  {n[1:40]:40s} {c/steps:7.1f} {t/steps:9.1f} us")
