"""Cross-run (issue 20 evidence): feed every stored window of a store's cases through the transformers of THIS venv
and print how far each stage moves from what the store recorded. Runs in the reference venv; never imported by
porting; writes nothing.

    /work/refvenv-hf/py4 reference/hf_cross.py golden/hf-t5     # 5.x-saved checkpoints under transformers 4.57
    /work/refvenv-hf/py5 reference/hf_cross.py golden/hf-t4     # 4.57-saved checkpoints under transformers 5.x

golden/hf-t5/README.md §4 quotes its output.
"""
import sys, json, warnings
warnings.filterwarnings("ignore")
from pathlib import Path
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
import torch, transformers
from safetensors.torch import load_file
from hf_capture import load_model, FEATURES_MODULE, POOLED_MODULE
transformers.logging.set_verbosity_error()
torch.set_num_threads(1)
store = Path(sys.argv[1])
for cj in sorted((store / "cases").glob("*.json")):
    meta = json.loads(cj.read_text())
    if meta.get("error") or not meta.get("stored_windows"): continue
    if "numpy-fbank" in cj.stem: continue
    mdir = store / "models" / meta["model"]["dir"]
    try:
        model, arch, _ = load_model(mdir)
    except Exception as e:
        print(f"{cj.stem:36s} LOAD FAILS under {transformers.__version__}: {type(e).__name__}: {str(e)[:150]}"); continue
    model.eval()
    t = load_file(str(cj.with_suffix(".safetensors")))
    worst = {}
    for i in meta["stored_windows"]:
        g = {k[len(f"w{i}/"):]: v for k, v in t.items() if k.startswith(f"w{i}/")}
        kw = {"attention_mask": g["F.attention_mask"]} if "F.attention_mask" in g else {}
        with torch.no_grad():
            out = model(g["F.input_values"], output_hidden_states=True, **kw)
        for j, h in enumerate(out.hidden_states):
            k = f"M.hidden_states.{j}"
            worst[k] = max(worst.get(k, 0), float((h - g[k]).abs().max()))
        worst["Y.logits"] = max(worst.get("Y.logits", 0), float((out.logits - g["Y.logits"]).abs().max()))
        worst["Y.probs"] = max(worst.get("Y.probs", 0), float((out.logits.softmax(-1) - g["Y.probs"]).abs().max()))
    big = {k: v for k, v in worst.items() if v > 1e-4}
    print(f"{cj.stem:36s} logits {worst['Y.logits']:.3g} probs {worst['Y.probs']:.3g}" + (f"  MOVED: {', '.join(f'{k} {v:.3g}' for k, v in big.items())}" if big else ""))
