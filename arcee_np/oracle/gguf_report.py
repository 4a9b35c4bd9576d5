"""What ``gguf_check`` found, as data and as text: a ``SettingCheck`` per transformers setting llama.cpp
reads otherwise, a ``TensorCheck`` per tensor, the ``GGUFCheckReport`` holding them, and the SNR floor each
ggml type must reach (``SNR_FLOORS``)."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field

import numpy as np

# Minimum signal-to-noise ratio (dB) of every row of a matrix stored in each type. A correct conversion of
# Gaussian-like weights scores about 140 (float32 from float64), 70 (F16), 50 (BF16), 45 (Q8_0), 33 (Q6_K),
# 27 (Q5_K, Q5_0, Q5_1), 21 (Q4_K, Q4_0, Q4_1); rows of real checkpoints with outliers a few dB less. A row
# taken from the wrong place, or a permutation undone wrongly, scores about 0 dB or below. (Rows of near-zero
# weights are judged against 1% of an average row's energy: see gguf_check._tensor_errors.)
SNR_FLOORS = {"F32": 120.0, "F16": 50.0, "BF16": 35.0, "Q8_0": 25.0, "Q6_K": 20.0, "Q5_K": 14.0, "Q5_1": 14.0,
              "Q5_0": 14.0, "Q4_K": 8.0, "Q4_1": 8.0, "Q4_0": 8.0}


# ---------------------------------------------------------------------------------------------- results
@dataclass
class SettingCheck:
    """One transformers setting against what llama.cpp will use, and its measured effect on the logits."""

    setting: str
    reference: object
    llama_cpp: object
    how: str
    max_abs: float | None = None  # max |logits with llama.cpp's value - logits with the reference's|
    argmax_agreement: float | None = None  # fraction of positions whose top token stays the same
    finding: bool = False


@dataclass
class TensorCheck:
    """One tensor of the GGUF against the reference's (errors of the dequantized values)."""

    name: str
    gguf_name: str
    type_name: str
    shape: tuple
    max_abs: float = 0.0
    max_rel: float = 0.0
    snr_db: float = math.inf
    worst_row_snr_db: float = math.inf
    finding: bool = False
    problem: str = ""


@dataclass
class GGUFCheckReport:
    """Everything gguf_check measured; ``findings`` lists what is wrong, one line each."""

    path: str
    reference: str
    input_ids: list
    dtype: str
    notes: list = field(default_factory=list)  # the metadata reading, as text lines
    settings: list = field(default_factory=list)  # SettingCheck
    combined: SettingCheck | None = None
    fix: str = ""  # llama.cpp flags restoring the ignored settings (where any can)
    fix_overrides: dict = field(default_factory=dict)  # the same as llama-cpp-python kv_overrides ...
    fix_context: dict = field(default_factory=dict)  # ... and context parameters
    tensors: list = field(default_factory=list)  # TensorCheck
    forward: dict = field(default_factory=dict)
    llama_cpp: dict = field(default_factory=dict)
    findings: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def summary(self) -> str:
        """The one line the command ends with."""
        if self.ok:
            settings = (f"{len(self.settings)} differing setting(s) without effect" if self.settings else
                        "every setting carried")
            return (f"gguf-check: clean: {os.path.basename(self.path)} matches {self.reference} within its types' "
                    f"precision ({len(self.tensors)} tensors, {settings})")
        return f"gguf-check: found {len(self.findings)}: " + "; ".join(self.findings)

    def by_type(self) -> dict:
        """Per ggml type: tensors, parameters, lowest and median tensor SNR, worst row SNR, its floor."""
        out = {}
        for kind in sorted({t.type_name for t in self.tensors}):
            rows = [t for t in self.tensors if t.type_name == kind and t.problem != "missing"]
            snrs = [t.snr_db for t in rows]
            out[kind] = {"tensors": len(rows), "parameters": int(sum(math.prod(t.shape) for t in rows)),
                         "min_snr_db": min(snrs, default=math.inf), "median_snr_db": float(np.median(snrs)) if snrs
                         else math.inf, "worst_row_snr_db": min((t.worst_row_snr_db for t in rows), default=math.inf),
                         "floor_db": SNR_FLOORS.get(kind), "max_rel": max((t.max_rel for t in rows), default=0.0)}
        return out

    def text(self) -> str:
        return "\n".join(_report_lines(self))

    def to_dict(self) -> dict:
        def clean(value):
            if isinstance(value, float) and not math.isfinite(value):
                return str(value)
            if isinstance(value, dict):
                return {k: clean(v) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return [clean(v) for v in value]
            return value
        out = {k: v for k, v in asdict(self).items()}
        out.update(ok=self.ok, summary=self.summary(), by_type=self.by_type())
        return clean(out)

# ---------------------------------------------------------------------------------------------- the text
def _fmt(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return "exact" if x == 0 else ("inf" if math.isinf(x) else f"{x:.3g}")
    return str(x)


def _report_lines(r: GGUFCheckReport) -> list[str]:
    lines = [f"gguf-check {r.path}", f"reference: {r.reference}",
             f"inputs: {len(r.input_ids)} token ids, arcee_np in {r.dtype}", "",
             "(a) metadata, as llama.cpp's Arcee loader reads it"]
    lines += ["  " + line for line in r.notes]
    if r.settings:
        lines += ["", f"  {'setting':<24} {'transformers':<30} {'llama.cpp':<32} {'max |dlogits|':>13} "
                      f"{'argmax':>7}  how"]
        for s in r.settings + ([r.combined] if r.combined else []):
            mark = "  <-- found" if s.finding and s is not r.combined else ""
            agree = "-" if s.argmax_agreement is None else f"{100 * s.argmax_agreement:.0f}%"
            lines.append(f"  {s.setting:<24} {_fmt(s.reference):<30} {_fmt(s.llama_cpp):<32} {_fmt(s.max_abs):>13} "
                         f"{agree:>7}  {s.how}{mark}")
        if r.fix:
            lines.append(f"  fix: {r.fix}")
    else:
        lines.append("  every transformers setting of the reference reaches llama.cpp")
    lines += ["", "(b) weights against the reference (SNR = 10 log10(sum ref^2 / sum err^2); floor: the least any row "
                  "of a correct conversion of that type reaches)"]
    lines.append(f"  {'type':<7} {'tensors':>7} {'parameters':>12} {'min SNR dB':>10} {'median':>8} {'worst row':>9} "
                 f"{'floor':>6} {'max rel':>9}")
    for kind, t in r.by_type().items():
        lines.append(f"  {kind:<7} {t['tensors']:>7} {t['parameters']:>12,} {_fmt(t['min_snr_db']):>10} "
                     f"{_fmt(t['median_snr_db']):>8} {_fmt(t['worst_row_snr_db']):>9} {_fmt(t['floor_db']):>6} "
                     f"{_fmt(t['max_rel']):>9}")
    lines.append(f"  {'tensor':<48} {'type':<6} {'max abs':>9} {'max rel':>9} {'SNR dB':>8} {'worst row':>9}")
    for t in r.tensors:
        mark = f"  <-- {t.problem}" if t.finding else ""
        lines.append(f"  {t.name:<48} {t.type_name:<6} {_fmt(t.max_abs):>9} {_fmt(t.max_rel):>9} {_fmt(t.snr_db):>8} "
                     f"{_fmt(t.worst_row_snr_db):>9}{mark}")
    if "skipped" in r.forward:
        lines += ["", f"(c) forward: skipped ({r.forward['skipped']})"]
    elif r.forward:
        lines += ["", "(c) forward: GGUF weights vs the reference's, both with the reference's config "
                      f"(tol {r.forward['tolerance']})",
                  f"  {r.forward['explanation']}"]
        if not r.forward["exact_types"]:
            lines.append("  (the file stores rounded or quantized weights: the forward is expected to diverge "
                         "from the first tensor that uses them; the table shows how the error grows)")
        lines.append(f"  {'tensor':<16} {'max abs':>9} {'max rel':>9}")
        lines += [f"  {name:<16} {_fmt(a):>9} {_fmt(b):>9}" for name, a, b in r.forward["growth"]]
    lines += ["", "(d) llama.cpp's own logits (flash attention off, F32 KV cache)"]
    d = r.llama_cpp
    if "skipped" in d or "error" in d:
        lines.append(f"  {d.get('skipped') or 'error: ' + d['error']}")
    elif d:
        for key, label in (("vs_reference", "vs the reference (transformers' settings and weights)"),
                           ("vs_arcee_np_prediction", "vs arcee_np running the file as llama.cpp reads it"),
                           ("flash_attention_vs_not", "flash attention on vs off")):
            lines.append(f"  {label:<56} max abs {_fmt(d[key]['max_abs']):>9}, argmax agree "
                         f"{100 * d[key]['argmax_agreement']:.0f}%")
        if "with_fix" in d:
            lines.append(f"  {'with the fix, vs the reference':<56} max abs {_fmt(d['with_fix']['max_abs']):>9}, "
                         f"argmax agree {100 * d['with_fix']['argmax_agreement']:.0f}%")
        lines.append(f"  caveat: {d['caveat']}")
        if not r.forward.get("exact_types", True):
            lines.append("  note: for F16/BF16/quantized weights llama.cpp also rounds the activations a product "
                         "reads (to F16, BF16, or 8-bit Q8_0/Q8_K blocks), which arcee_np does not: that is the gap "
                         "between llama.cpp and arcee_np's reading of the file")
    lines += ["", f"findings: {len(r.findings)}"] + [f"  - {f}" for f in r.findings] + [r.summary()]
    return lines
