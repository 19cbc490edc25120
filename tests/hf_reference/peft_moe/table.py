#!/usr/bin/python3
"""Format out/results.jsonl (one peft_moe.py --json object per line) as the RESULTS.txt table."""
import json
import sys


def f(x, fmt="{:.6f}"):
    return "-" if x is None else fmt.format(x)


def main(path):
    rows = [json.loads(l) for l in open(path) if l.strip()]
    out = []
    w = out.append
    w("perplexity, 16 windows x 256 tokens of fixtures/reference/public_eval_windows.npy (4080 predictions)")
    w("tf = transformers (float32, eager) on E/x = cloq export J/x --format dequant --dtype fp32;")
    w("tf+PEFT = peft.PeftModel.from_pretrained(that model, E/x/adapter); cloq J = cloq ppl on the job J/x")
    w("")
    hdr = (f"{'case':<7} {'tf':<6} {'peft':<6} {'tf original':>12} {'tf base':>12} {'cloq J':>12} {'rel':>9}"
           f" {'tf+PEFT':>12} {'cloq E+adp':>12} {'rel':>9} {'cloq J':>12} {'rel':>9} {'s':>4} {'status':>6}")
    w(hdr)
    w(" " * 35 + "(E, no adapter)  --no-lora" + " " * 28 + "--adapter")
    w("-" * len(hdr))
    for r in rows:
        rl = r["rel"]
        w(f"{r['case']:<7} {r['release']:<6} {r['peft']:<6} {f(r.get('tf_original')):>12} {f(r['tf_base']):>12}"
          f" {f(r['cloq_job_nolora']):>12} {f(rl['job --no-lora'], '{:.2e}'):>9}"
          f" {f(r['tf_peft']):>12} {f(r['cloq_export_adapter']):>12} {f(rl['export+adapter'], '{:.2e}'):>9}"
          f" {f(r['cloq_job']):>12} {f(rl['job'], '{:.2e}'):>9} {r['scaling_expected']:>4g}"
          f" {'OK' if r['status'] == 0 else 'FAIL':>6}")
    w("")
    w("rel = |cloq - tf| / tf; tolerance 1e-5. s = lora_alpha / r (adapter_config.json) = every PEFT LoRA layer's scaling.")
    w("")
    w("per case: LoRA targets (adapter file = PEFT-wrapped = expected from config.json), Linear left plain,")
    w("other checks (cloq ppl E/x without adapter vs tf base; merge_and_unload vs tf+PEFT; disable_adapter == base;")
    w("negative control: every PEFT scaling doubled, rel to cloq E+adp; mean KL(original || model) per prediction)")
    for r in rows:
        rl = r["rel"]
        nt = r["n_targets"]
        w(f"  {r['case']} tf {r['release']} peft {r['peft']}: targets {nt['file']}/{nt['peft']}/{nt['expected']};"
          f" plain: {', '.join(r['unwrapped_linears'])}")
        w(f"      E base rel {f(rl['export base'], '{:.2e}')}; merged rel {f(rl['merged vs peft'], '{:.2e}')};"
          f" disabled==base {r['tf_peft_disabled'] == r['tf_base']}; neg x2 rel {f(r['neg_rel'], '{:.2e}')};"
          f" KL base {f(r.get('kl_orig_base'), '{:.4f}')} -> +LoRA {f(r.get('kl_orig_peft'), '{:.4f}')};"
          f" load missing/unexpected {len(r['load_missing_lora'])}/{len(r['load_unexpected'])}; log lines {len(r['log'])}")
        g = r.get("gptq")
        if g:
            w(f"      GPTQ export: {g['packed_linears']} packed linears, unpacked (v1: q - (z+1)) vs dequant max rel"
              f" {g['max_unpack_rel_diff_vs_dequant']:.1e}; cloq ppl G+adapter {f(g['cloq_gptq_adapter'])}"
              f" (rel to tf+PEFT {f(g['rel_vs_tf_peft'], '{:.2e}')}); problems: {g['problems'] or 'none'}")
        for p in r["problems"]:
            w(f"      PROBLEM: {p}")
        for n in r.get("notes", []):
            w(f"      note: {n}")
    print("\n".join(out))
    return 0 if all(r["status"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
