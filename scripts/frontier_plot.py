#!/usr/bin/env python3
"""Reward against KL, one colour and marker per method, as an SVG written by hand (no plotting
library on the build machines): frontier_plot.py frontier.csv frontier.svg."""
import csv
import sys

COLOURS = {"dpo": "#1f77b4", "preferred-ft": "#2ca02c", "unlikelihood": "#d62728", "sft": "#000000"}
LABELS = {"dpo": "DPO (beta in the label)", "preferred-ft": "Preferred-FT", "unlikelihood": "Unlikelihood",
          "sft": "SFT (reference)"}
W, H, LEFT, RIGHT, TOP, BOTTOM = 720, 480, 80, 200, 40, 60


def main(csv_path, svg_path):
    rows = list(csv.DictReader(open(csv_path)))
    kl = [float(r["kl"]) for r in rows]
    reward = [float(r["reward"]) for r in rows]
    x0, x1 = min(0.0, min(kl)), max(kl) * 1.05 or 1.0
    y0, y1 = min(reward) - 0.02, max(reward) + 0.02
    sx = lambda v: LEFT + (v - x0) / (x1 - x0) * (W - LEFT - RIGHT)
    sy = lambda v: H - BOTTOM - (v - y0) / (y1 - y0) * (H - TOP - BOTTOM)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W / 2 - 60}" y="24" font-size="15">Reward vs KL, synthetic task</text>']
    for i in range(6):  # axes with ticks
        xv, yv = x0 + (x1 - x0) * i / 5, y0 + (y1 - y0) * i / 5
        out.append(f'<line x1="{sx(xv):.1f}" y1="{H - BOTTOM}" x2="{sx(xv):.1f}" y2="{TOP}" stroke="#eee"/>')
        out.append(f'<text x="{sx(xv) - 12:.1f}" y="{H - BOTTOM + 16}">{xv:.2f}</text>')
        out.append(f'<line x1="{LEFT}" y1="{sy(yv):.1f}" x2="{W - RIGHT}" y2="{sy(yv):.1f}" stroke="#eee"/>')
        out.append(f'<text x="{LEFT - 44}" y="{sy(yv) + 4:.1f}">{yv:.3f}</text>')
    out.append(f'<rect x="{LEFT}" y="{TOP}" width="{W - LEFT - RIGHT}" height="{H - TOP - BOTTOM}" fill="none" stroke="black"/>')
    out.append(f'<text x="{LEFT + 120}" y="{H - 20}">sequence-level KL(policy || SFT), estimated from samples</text>')
    out.append(f'<text transform="translate(20,{H / 2 + 60}) rotate(-90)">mean true reward of samples</text>')
    for r, x, y in zip(rows, kl, reward):
        c = COLOURS.get(r["method"], "#888")
        out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="5" fill="{c}"/>')
        if r["method"] == "dpo":
            out.append(f'<text x="{sx(x) + 7:.1f}" y="{sy(y) - 6:.1f}" font-size="10">{r["param"]}/{r["steps"]}</text>')
    for i, (m, label) in enumerate(LABELS.items()):
        y = TOP + 20 + 20 * i
        out.append(f'<circle cx="{W - RIGHT + 20}" cy="{y}" r="5" fill="{COLOURS[m]}"/>')
        out.append(f'<text x="{W - RIGHT + 30}" y="{y + 4}">{label}</text>')
    out.append(f'<text x="{W - RIGHT + 12}" y="{TOP + 110}" font-size="10">labels: beta/steps</text>')
    out.append("</svg>")
    open(svg_path, "w").write("\n".join(out) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
