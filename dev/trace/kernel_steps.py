# per-step kernel times from ktrace's CSV (start,end,stream,name): the last STEPS decode steps (each starts with embed)
import sys, collections
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 10
rows = []
for line in open(sys.argv[1]):
    a, b, s, n = line.rstrip('\n').split(',', 3)
    rows.append((int(a), int(b), int(s), n))
rows.sort()
embeds = [i for i, r in enumerate(rows) if r[3] == 'embed']
sel = embeds[-steps - 1:]
t0, t1 = rows[sel[0]][0], rows[sel[-1]][0]
per = collections.defaultdict(lambda: [0, 0.0]); streams = collections.defaultdict(float)
part = rows[sel[0]:sel[-1]]
for r in part:
    d = (r[1] - r[0]) / 1e3
    per[(r[3], r[2])][0] += 1; per[(r[3], r[2])][1] += d; streams[r[2]] += d
span = (t1 - t0) / 1e3 / steps
print(f"step {span:.1f} us (last {steps} of {len(embeds)} steps); kernel time per stream: " + ", ".join(f"{s}: {v/steps:.1f}" for s, v in streams.items()))
for (n, s), (c, d) in sorted(per.items(), key=lambda kv: -kv[1][1]):
    print(f"  {n[:46]:46s} s{s:<3d} {c/steps:6.1f}/step {d/steps:9.1f} us/step {d/c:8.2f} us each")
main = rows[sel[0]][2]; busy = 0.0; last = t0
for a, b, s, n in part:
    if s != main: continue
    if b > last: busy += (b - max(a, last)) / 1e3; last = b
print(f"main stream s{main}: busy {busy/steps:.1f} us/step, idle {span - busy/steps:.1f}")
# one middle layer of the last step, in order: kernel, stream, start from the layer's first kernel, duration
last_step = [r for r in part if r[0] >= rows[sel[-2]][0]]
qkv = [i for i, r in enumerate(last_step) if r[3].startswith('gemv') and r[2] == main]
if len(qkv) > 70:
    # every layer has 4 main-stream products (q/k/v, o, gate/up, down): layer 16 starts at the 64th
    a = last_step[qkv[64]][0]; b = last_step[qkv[68]][0]
    print("layer 16 of the last step (us from its q/k/v product):")
    for r in last_step:
        if a - 300000 <= r[0] < b and (r[0] >= a or r[2] != main):
            print(f"    {(r[0]-a)/1e3:8.1f} {(r[1]-r[0])/1e3:7.1f} s{r[2]:<3d} {r[3][:60]}")
# between steps: from the step's last kernel's end to the next embed
gaps = []
for i in range(len(sel) - 1):
    seg = rows[sel[i]:sel[i + 1]]
    end = max(r[1] for r in seg)
    gaps.append((rows[sel[i + 1]][0] - end) / 1e3)
print("between steps (last kernel's end to the next embed), us: " + " ".join(f"{g:.0f}" for g in gaps))
