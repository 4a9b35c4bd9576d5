"""What a conversion to GGUF changed: ``arcee-np gguf-check MODEL.gguf --reference HF_DIR`` and ``gguf_check``.

Four sections, each measured on the same token ids:

(a) metadata: every transformers setting of the reference that the file does not carry or that llama.cpp's
    Arcee loader ignores, each with its effect: the reference (its own weights) run with the setting as
    transformers has it and as llama.cpp will have it (``io.gguf.read_metadata``, reading "llama.cpp");
(b) weights: per tensor, the GGUF's values (dequantized exactly as ggml does, rotary rows restored) against
    the reference's: max abs error, relative error (max abs over max |reference|) and signal-to-noise
    ratio ``10 log10(sum ref^2 / sum err^2)``; grouped by ggml type; each row of a matrix must reach the
    floor its type allows (``SNR_FLOORS``: a row read from the wrong place scores about 0 dB);
(c) forward: the GGUF's weights and the reference's, both run with the reference's config, traced
    (``oracle.compare``): the first divergence and the error of every layer's output;
(d) llama.cpp, when llama-cpp-python is importable: its own logits (flash attention off, F32 KV cache)
    beside the reference's and beside arcee_np's prediction (the file under llama.cpp's reading), the
    flash-attention run (its kernel turns the KV cache into float16), and llama.cpp with the overrides
    that restore the ignored settings.

A finding is: a setting whose effect passes the float32 tolerance, a tensor missing or below its type's
floor, an all-F32 file whose forward diverges, llama.cpp deviating from arcee_np's prediction of it on an
all-F32 file, or a file llama.cpp's Arcee loader will refuse. The command exits 1 with one line naming the
findings, 0 when there are none, 2 when it cannot run as asked.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field

import numpy as np

from ..config import ArceeConfig
from ..io.checkpoint import read_checkpoint
from ..io.gguf import GGUFFile, read_gguf, read_metadata
from ..io.gguf_writer import gguf_name
from ..blocks.rope import yarn_attention_factor
from ..blocks.stored import is_stored
from ..errors import UsageError
from ..validation.cli import (check_input_file, check_model_folder, check_output_file, non_negative_int,
                              positive_int)
from .cli import EXIT_DIVERGED, EXIT_OK, parse_ids
from .compare import TOLERANCES, compare_traces
from .llama_cpp import llama_cpp_available, llama_cpp_logits
from .tracefile import trace_model

# Minimum signal-to-noise ratio (dB) of every row of a matrix stored in each type. A correct conversion of
# Gaussian-like weights scores about 140 (float32 from float64), 70 (F16), 50 (BF16), 45 (Q8_0), 33 (Q6_K),
# 27 (Q5_K, Q5_0, Q5_1), 21 (Q4_K, Q4_0, Q4_1); rows of real checkpoints with outliers a few dB less. A row taken from the wrong
# place, or a permutation undone wrongly, scores about 0 dB or below. (Rows of near-zero weights are judged
# against 1% of an average row's energy: see _tensor_errors.)
SNR_FLOORS = {"F32": 120.0, "F16": 50.0, "BF16": 35.0, "Q8_0": 25.0, "Q6_K": 20.0, "Q5_K": 14.0, "Q5_1": 14.0,
              "Q5_0": 14.0, "Q4_K": 8.0, "Q4_1": 8.0, "Q4_0": 8.0}
ROW_ENERGY_CUSHION = 0.01  # a row's SNR counts its energy as at least this share of an average row's
EFFECT = TOLERANCES["float32"]  # a setting matters when it moves the logits by more than float32 noise
LLAMA_CPP_F32 = (1e-3, 1e-4)  # (atol, rtol): llama.cpp vs arcee_np's prediction on an all-F32 file
_ROW_CHUNK = 1024
_YARN_GROUPS = {  # the transformers YaRN settings no Arcee GGUF key reaches llama.cpp with
    "attention_factor": ("attention_factor",),
    "beta_fast/beta_slow": ("beta_fast", "beta_slow"),
    "mscale/mscale_all_dim": ("mscale", "mscale_all_dim"),
    "truncate": ("truncate",),
}
_DEFAULTS = {"beta_fast": 32, "beta_slow": 1, "truncate": True}


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


# ---------------------------------------------------------------------------------------------- the check
def gguf_check(path, reference, input_ids=None, length: int = 64, seed: int = 0, dtype: str = "float32",
               llama_cpp: bool | None = None, threads: int | None = None) -> GGUFCheckReport:
    """Check the GGUF at ``path`` against the transformers checkpoint folder ``reference`` (sections: module
    docstring). input_ids: [T] or [1, T] token ids (default: ``length`` random ids from ``seed``); dtype: the
    arcee_np runs' dtype ("float32" or "float64"); llama_cpp: run llama.cpp (default: when importable)."""
    from ..models import ArceeForCausalLM

    path, reference = os.fspath(path), os.fspath(reference)
    ref_config = ArceeConfig.from_pretrained(reference)
    file = GGUFFile(path)
    reading = read_metadata(file, "llama.cpp")
    ids = _input_ids(input_ids, length, seed, ref_config)
    report = GGUFCheckReport(path, reference, ids[0].tolist(), dtype, notes=reading.lines())
    mismatch = _shape_mismatch(ref_config, reading.config)
    if mismatch:
        report.findings.append(f"the file is not a conversion of the reference: {mismatch}")
        return report
    ref_tensors = read_checkpoint(reference)

    def logits_of(config):
        model = ArceeForCausalLM.from_state_dict(config, ref_tensors, dtype=dtype)
        return np.asarray(model(ids).logits[0], dtype=np.float64)

    base = logits_of(ref_config)
    _check_settings(report, ref_config, reading.config, file, logits_of, base)
    _check_weights(report, file, ref_config, ref_tensors)
    if any(t.problem == "missing" or t.problem.startswith("shape") for t in report.tensors):
        report.forward = {"skipped": "the file lacks tensors of the reference, or holds them in other shapes"}
        report.llama_cpp = {"skipped": report.forward["skipped"]}
        return report
    _check_forward(report, file, ref_config, ref_tensors, ids, dtype)
    if llama_cpp is None:
        llama_cpp = llama_cpp_available()
    if llama_cpp:
        _check_llama_cpp(report, path, ids, dtype, base, file, threads)
    else:
        report.llama_cpp = {"skipped": "llama-cpp-python is not importable (pip install llama-cpp-python)"}
    return report


def _input_ids(input_ids, length, seed, config) -> np.ndarray:
    if input_ids is None:
        length = min(length, config.max_position_embeddings)
        return np.random.default_rng(seed).integers(0, config.vocab_size, size=(1, length), dtype=np.int64)
    ids = np.asarray(input_ids, dtype=np.int64).reshape(1, -1)
    if ids.size == 0 or ids.min() < 0 or ids.max() >= config.vocab_size:
        raise ValueError(f"input ids must be in [0, {config.vocab_size}) and at least one, got {ids.tolist()[0][:8]}.")
    return ids


def _shape_mismatch(ref: ArceeConfig, ours: ArceeConfig) -> str:
    fields = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "head_dim")
    return ", ".join(f"{f} {getattr(ours, f)} in the file, {getattr(ref, f)} in the reference" for f in fields
                     if getattr(ref, f) != getattr(ours, f))


# ---------------------------------------------------------------------------------------------- (a) settings
def _effective(scaling: dict, key: str):
    """A YaRN setting as transformers applies it: its value, or the default an absent (or, for the betas,
    falsy) value falls back to."""
    if key == "truncate":
        return scaling.get("truncate", True)
    return scaling.get(key) or _DEFAULTS.get(key)


def _variants(ref: ArceeConfig, llama: ArceeConfig, file: GGUFFile) -> list:
    """(SettingCheck without its effect, the reference config with that setting as llama.cpp has it)."""
    out = []

    def variant(**changes):
        data = ref.to_dict()
        data.update(changes)
        return ArceeConfig.from_dict(data)

    if ref.hidden_act != llama.hidden_act:
        out.append((SettingCheck("hidden_act", ref.hidden_act, llama.hidden_act,
                                 "not carried: llama.cpp's Arcee graph always uses relu(x)**2"),
                    variant(hidden_act=llama.hidden_act)))
    for name in ("rope_theta", "rms_norm_eps"):
        if getattr(ref, name) != getattr(llama, name):
            out.append((SettingCheck(name, getattr(ref, name), getattr(llama, name), "carried as float32"),
                        variant(**{name: getattr(llama, name)})))
    if ref.rope_type != llama.rope_type:
        how = "no rope.scaling keys in the file" if llama.rope_scaling is None else \
            f"the file sets {llama.rope_type}"
        out.append((SettingCheck("rope_type", ref.rope_type, llama.rope_type, how), variant(rope_scaling=llama.rope_scaling)))
    elif ref.rope_type == "linear" and ref.rope_scaling["factor"] != llama.rope_scaling["factor"]:
        out.append((SettingCheck("factor", ref.rope_scaling["factor"], llama.rope_scaling["factor"],
                                 "carried, with another value"), variant(rope_scaling=llama.rope_scaling)))
    elif ref.rope_type == "yarn":
        ref_s, llama_s = ref.rope_scaling, llama.rope_scaling
        for key in ("factor", "original_max_position_embeddings"):
            if ref_s[key] != llama_s[key]:
                out.append((SettingCheck(key, ref_s[key], llama_s[key], "carried, with another value"),
                            variant(rope_scaling={**ref_s, key: llama_s[key]})))
        for group, keys in _YARN_GROUPS.items():
            if not any(k in ref_s for k in keys) and not (group == "attention_factor" and "attention_factor" in llama_s):
                continue
            changed = {k: v for k, v in ref_s.items() if k not in keys}
            changed.update({k: llama_s[k] for k in keys if k in llama_s})
            if group == "attention_factor" or (group == "mscale/mscale_all_dim" and "attention_factor" not in ref_s):
                changed["attention_factor"] = yarn_attention_factor(llama_s)  # the multiplier llama.cpp applies
            written = [f"rope.scaling.yarn_{'attn_factor' if k == 'attention_factor' else k}" for k in keys
                       if file.arch_value(f"rope.scaling.yarn_{'attn_factor' if k == 'attention_factor' else k}")
                       is not None]
            how = (f"written as {', '.join(written)}, which llama.cpp's Arcee loader does not read" if written else
                   "always floored/ceiled by ggml: no key can say otherwise" if group == "truncate" else
                   "not carried: the converter never writes it")
            reference = " / ".join(str(ref_s[k]) if k in ref_s else "-" for k in keys)
            if group in ("attention_factor", "mscale/mscale_all_dim"):  # both decide the cos/sin multiplier
                if group != "attention_factor":
                    reference += f" (factor {yarn_attention_factor(ref_s):.6g})"
                used = f"{yarn_attention_factor(llama_s):.6g}" + ("" if "attention_factor" in llama_s else
                                                                   " = 1 + 0.1 ln factor")
            else:
                used = " / ".join(str(_effective(llama_s, k)) for k in keys)
            out.append((SettingCheck(group, reference, used, how), variant(rope_scaling=changed)))
    if not ref.tie_word_embeddings and llama.tie_word_embeddings:
        out.append((SettingCheck("tie_word_embeddings", False, True, "no output.weight: llama.cpp uses token_embd"),
                    variant(tie_word_embeddings=True)))
    return out


def _check_settings(report, ref, llama, file, logits_of, base) -> None:
    def effect(check: SettingCheck, config) -> SettingCheck:
        logits = logits_of(config)
        check.max_abs = float(np.abs(logits - base).max())
        check.argmax_agreement = float(np.mean(logits.argmax(-1) == base.argmax(-1)))
        check.finding = bool(np.any(np.abs(logits - base) > EFFECT.atol + EFFECT.rtol * np.abs(base)))
        return check

    variants = _variants(ref, llama, file)
    report.settings = [effect(check, config) for check, config in variants]
    if variants:
        combined = ArceeConfig.from_dict({**ref.to_dict(), "hidden_act": llama.hidden_act, "rope_theta": llama.rope_theta,
                                          "rms_norm_eps": llama.rms_norm_eps, "rope_scaling": llama.rope_scaling,
                                          "tie_word_embeddings": llama.tie_word_embeddings or ref.tie_word_embeddings})
        report.combined = effect(SettingCheck("all together", "transformers' config", "llama.cpp's reading",
                                              "what llama.cpp differs by from metadata alone"), combined)
    for check in report.settings:
        if check.finding:
            report.findings.append(f"{check.setting} {check.reference} -> {check.llama_cpp} in llama.cpp "
                                   f"(max |dlogits| {check.max_abs:.2g})")
    report.fix, report.fix_overrides, report.fix_context = _fix(ref, llama, report.settings)
    if ref.attention_bias or ref.mlp_bias:
        unloaded = [name for name in file.tensors if name.endswith(("attn_output.bias", "ffn_up.bias", "ffn_down.bias"))]
        if unloaded:
            report.findings.append(f"llama.cpp's Arcee loader creates no o_proj/MLP biases and refuses the file "
                                   f"({len(unloaded)} such tensors, e.g. {unloaded[0]})")


def _fix(ref, llama, settings) -> tuple[str, dict, dict]:
    """How to make llama.cpp use the settings it ignores, where it can: (the command-line flags, the same as
    llama-cpp-python's kv_overrides, and as its context parameters)."""
    found = {s.setting for s in settings if s.finding}
    flags, overrides, context = [], {}, {}
    yarn = ref.rope_type == "yarn" and llama.rope_type == "yarn"
    if yarn and found & {"attention_factor", "mscale/mscale_all_dim"}:
        # llama.cpp's multiplier is (1 + 0.1 ln factor) * rope.scaling.attn_factor
        value = yarn_attention_factor(ref.rope_scaling) / (1.0 + 0.1 * math.log(llama.rope_scaling["factor"]))
        overrides["arcee.rope.scaling.attn_factor"] = value
        flags.append(f"--override-kv arcee.rope.scaling.attn_factor=float:{value:.9g}")
    if yarn and "beta_fast/beta_slow" in found:
        for key in ("beta_fast", "beta_slow"):
            context[f"yarn_{key}"] = float(_effective(ref.rope_scaling, key))
            flags.append(f"--yarn-{key.replace('_', '-')} {context[f'yarn_{key}']:g}")
    if ref.rope_type == "linear" and found & {"rope_type", "factor"}:
        factor = ref.rope_scaling["factor"]
        context.update(rope_scaling_type=1, rope_freq_scale=1.0 / factor)  # 1: linear
        flags.append(f"--rope-scaling linear --rope-scale {factor:g}")
    if ref.rope_type == "yarn" and found & {"rope_type", "factor", "original_max_position_embeddings"}:
        factor, original = ref.rope_scaling["factor"], ref.rope_scaling["original_max_position_embeddings"]
        context.update(rope_scaling_type=2, rope_freq_scale=1.0 / factor, yarn_orig_ctx=int(original))  # 2: YaRN
        flags.append(f"--rope-scaling yarn --rope-scale {factor:g} --yarn-orig-ctx {original}")
    cannot = [s for s in ("truncate", "hidden_act", "rope_theta", "rms_norm_eps", "tie_word_embeddings") if s in found]
    if ref.rope_scaling is None and "rope_type" in found:
        cannot.append("rope_type")
    text = ("llama.cpp " + " ".join(flags)) if flags else ""
    if cannot:
        text += ("; " if text else "") + f"not expressible in llama.cpp: {', '.join(cannot)}"
    return text, overrides, context


# ---------------------------------------------------------------------------------------------- (b) weights
def _check_weights(report, file, ref_config, ref_tensors) -> None:
    _, tensors, _ = read_gguf(file, "float32", "cpu", config=ref_config)
    names = [n for n in ref_tensors if not (ref_config.tie_word_embeddings and n == "lm_head.weight")]
    for name in names:
        target = gguf_name(name)
        stored = file.tensors.get(target)
        if stored is None:
            report.tensors.append(TensorCheck(name, target, "-", tuple(ref_tensors[name].shape), finding=True,
                                              problem="missing"))
            report.findings.append(f"{target} ({name}) is missing from the file")
            continue
        check = TensorCheck(name, target, stored.type_name, tuple(stored.shape))
        ours, theirs = tensors[name], np.asarray(ref_tensors[name], dtype=np.float32)
        if tuple(theirs.shape) != tuple(ours.shape):
            check.finding, check.problem = True, f"shape {tuple(ours.shape)} vs the reference's {theirs.shape}"
        else:
            _tensor_errors(check, ours, theirs)
        report.tensors.append(check)
        if check.finding:
            report.findings.append(f"{target} ({stored.type_name}): {check.problem}")
    extra = sorted(set(file.tensors) - {gguf_name(n) for n in names})
    for target in extra:
        report.findings.append(f"{target} is in the file but not in the reference")


def _widened(weight, start, stop) -> np.ndarray:
    if is_stored(weight):
        return np.asarray(weight.widened_rows(start, stop), dtype=np.float32)
    return np.asarray(weight[start:stop], dtype=np.float32)


def _tensor_errors(check: TensorCheck, ours, theirs: np.ndarray) -> None:
    """Fill max abs / rel error and the SNRs, chunk by chunk of rows.

    A row's SNR is its error energy against the larger of its own energy and ROW_ENERGY_CUSHION times an
    average row's: a row of near-zero weights (an unused token's embedding) may lose most of its few bits
    without mattering, while a row read from the wrong place has an error as large as a whole row.
    """
    rows = theirs.reshape(theirs.shape[0], -1) if theirs.ndim > 1 else theirs.reshape(1, -1)
    row_signal, row_noise = np.zeros(rows.shape[0]), np.zeros(rows.shape[0])
    max_abs = max_ref = 0.0
    nonfinite = False
    for start in range(0, rows.shape[0], _ROW_CHUNK):
        stop = min(start + _ROW_CHUNK, rows.shape[0])
        a = (_widened(ours, start, stop) if theirs.ndim > 1 else np.asarray(ours, dtype=np.float32).reshape(1, -1))
        b = rows[start:stop].astype(np.float64)
        err = a.astype(np.float64) - b
        nonfinite |= not np.isfinite(a).all()
        row_signal[start:stop], row_noise[start:stop] = np.sum(b * b, axis=1), np.sum(err * err, axis=1)
        max_abs, max_ref = max(max_abs, float(np.abs(err).max())), max(max_ref, float(np.abs(b).max()))
    signal, noise = float(row_signal.sum()), float(row_noise.sum())
    check.max_abs, check.max_rel = max_abs, (max_abs / max_ref if max_ref > 0 else (0.0 if max_abs == 0 else math.inf))
    with np.errstate(divide="ignore", invalid="ignore"):
        check.snr_db = float(10 * np.log10(signal / noise)) if noise > 0 else math.inf
        cushioned = np.maximum(row_signal, ROW_ENERGY_CUSHION * signal / len(row_signal))
        snrs = np.where(row_noise > 0, 10 * np.log10(cushioned / row_noise), math.inf)
    check.worst_row_snr_db = float(snrs.min()) if signal > 0 else (math.inf if noise == 0 else -math.inf)
    floor = SNR_FLOORS.get(check.type_name, 0.0)
    if nonfinite:
        check.finding, check.problem = True, "holds NaN or Inf"
    elif check.worst_row_snr_db < floor:
        check.finding = True
        check.problem = (f"a row reaches only {check.worst_row_snr_db:.1f} dB SNR (tensor {check.snr_db:.1f} dB), "
                         f"below the {floor:.0f} dB any correct {check.type_name} conversion reaches: values from "
                         f"the wrong place or a broken conversion")


# ---------------------------------------------------------------------------------------------- (c) forward
def _not_wide(name: str) -> bool:
    """Trace everything except the widest per-layer tensors (the MLP's inner activations)."""
    return not name.endswith(("mlp.up", "mlp.act"))


def _check_forward(report, file, ref_config, ref_tensors, ids, dtype) -> None:
    from ..models import ArceeForCausalLM

    reference = ArceeForCausalLM.from_state_dict(ref_config, ref_tensors, dtype=dtype)
    ours = ArceeForCausalLM.from_gguf(file, dtype=dtype, config=ref_config)
    theirs_trace = trace_model(reference, ids, _not_wide)
    ours_trace = trace_model(ours, ids, _not_wide)
    tolerance = "float64" if dtype == "float64" else "float32"
    compared = compare_traces(ours_trace, theirs_trace, tolerance, reference_label="reference weights",
                              candidate_label="GGUF weights")
    rows = {r.name: r for r in compared.rows}
    growth = [(name, rows[name].max_abs, rows[name].max_rel) for name in
              ["embed"] + [f"layers.{i}.out" for i in range(ref_config.num_hidden_layers)] + ["final_norm", "logits"]
              if name in rows]
    all_f32 = all(t.type_name == "F32" for t in file.tensors.values())
    report.forward = {"first_divergence": compared.first.name if compared.first else None,
                      "explanation": compared.summary(), "growth": growth, "tolerance": str(compared.tolerance),
                      "exact_types": all_f32}
    if all_f32 and compared.first is not None:
        report.findings.append(f"an all-F32 file should reproduce the reference, yet {compared.summary()}")


# ---------------------------------------------------------------------------------------------- (d) llama.cpp
def _check_llama_cpp(report, path, ids, dtype, base, file, threads) -> None:
    from ..models import ArceeForCausalLM

    try:
        llama = llama_cpp_logits(path, ids[0], threads=threads).astype(np.float64)
        flash = llama_cpp_logits(path, ids[0], flash_attention=True, threads=threads).astype(np.float64)
    except Exception as err:  # llama.cpp refused the file or crashed: that is a finding
        report.llama_cpp = {"error": str(err)}
        report.findings.append(f"llama.cpp could not run the file ({err})")
        return
    predicted = np.asarray(ArceeForCausalLM.from_gguf(file, dtype=dtype)(ids).logits[0], dtype=np.float64)
    out = {"vs_reference": _gap(llama, base), "vs_arcee_np_prediction": _gap(llama, predicted),
           "flash_attention_vs_not": _gap(flash, llama),
           "caveat": "flash attention converts the KV cache to float16 whatever its type: an F32 check must run "
                     "with flash attention off (as here); the flash run shows the difference"}
    if report.fix_overrides or report.fix_context:
        fixed = llama_cpp_logits(path, ids[0], kv_overrides=report.fix_overrides or None,
                                 context=report.fix_context or None, threads=threads).astype(np.float64)
        out["with_fix"] = {"fix": report.fix, **_gap(fixed, base)}
    report.llama_cpp = out
    all_f32 = all(t.type_name == "F32" for t in file.tensors.values())
    atol, rtol = LLAMA_CPP_F32
    if all_f32 and np.any(np.abs(llama - predicted) > atol + rtol * np.abs(predicted)):
        report.findings.append(f"llama.cpp's logits differ from arcee_np's reading of the file by "
                               f"{out['vs_arcee_np_prediction']['max_abs']:.2g}: something arcee_np does not model")


def _gap(a: np.ndarray, b: np.ndarray) -> dict:
    return {"max_abs": float(np.abs(a - b).max()), "argmax_agreement": float(np.mean(a.argmax(-1) == b.argmax(-1)))}


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
        lines += ["", f"  {'setting':<24} {'transformers':<30} {'llama.cpp':<32} {'max |dlogits|':>13} {'argmax':>7}  how"]
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


# ---------------------------------------------------------------------------------------------- the command
def add_gguf_check_command(commands) -> None:
    """Add ``gguf-check`` to an argparse subparsers object (sets ``func(args) -> exit status``)."""
    p = commands.add_parser("gguf-check", help="find what a conversion to GGUF changed against the transformers "
                            "checkpoint", description="Check MODEL.gguf against the transformers checkpoint it was "
                            "converted from: the settings llama.cpp will ignore (each with its measured effect), "
                            "every tensor's error, the forward layer by layer, and llama.cpp's own logits when "
                            "llama-cpp-python is installed. Exits 1 when something is found, 0 on a clean "
                            "conversion, 2 when it cannot run as asked. Docs: docs/gguf.md.")
    p.add_argument("model", metavar="MODEL.gguf", help="the GGUF file")
    p.add_argument("--reference", required=True, metavar="HF_DIR", help="the transformers checkpoint folder")
    p.add_argument("--ids", help='token ids: inline ("1 7 3") or a file (default: --length random ids)')
    p.add_argument("--length", type=positive_int, default=64, help="random ids to use without --ids (default: %(default)s)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the random ids (default: %(default)s)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="arcee_np's dtype "
                   "(default: %(default)s)")
    p.add_argument("--no-llama-cpp", action="store_true", help="skip section (d) even when llama-cpp-python is there")
    p.add_argument("--threads", type=positive_int, help="llama.cpp threads (default: 1)")
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    p.set_defaults(func=run_gguf_check)


def run_gguf_check(args) -> int:
    check_input_file(args.model, "GGUF file")  # what the command line names, before any work (validation.cli)
    check_model_folder(args.reference, "--reference")
    if args.json:
        check_output_file(args.json, "--json")
    ids = parse_ids(args.ids) if args.ids else None
    if ids is not None and ids.shape[0] != 1:
        raise UsageError("--ids must be one row of token ids")
    report = gguf_check(args.model, args.reference, ids, length=args.length, seed=args.seed, dtype=args.dtype,
                        llama_cpp=False if args.no_llama_cpp else None, threads=args.threads)
    print(report.text())
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(report.to_dict(), fh, indent=1)
    return EXIT_OK if report.ok else EXIT_DIVERGED
