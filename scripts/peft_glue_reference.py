#!/usr/bin/env python3
"""HF PEFT LoRA on a GLUE task: the settings of shared/bench/hf_glue_reference.py (whose data readers and metrics it
imports, unchanged) with LoraConfig(r, lora_alpha, lora_dropout, target_modules) on BertModel, LayerNorms frozen as
PEFT leaves them, the [CLS] -> dropout -> linear head trained (modules_to_save). Prints one JSON line with the best
dev metric, as the reference does. For a same-call comparison with `adaptersharp train --method lora`.
Usage: peft_glue_reference.py --reference .../hf_glue_reference.py --model-dir DIR --data-dir glue/SST-2 --task sst2
       [--r 8 --alpha 16 --dropout 0.1 --targets query,value --lr 5e-4 --epochs 2 --batch 64 --seed 1]"""
import argparse, importlib.util, json, math, os, random, time
import torch, torch.nn as nn
import peft
from safetensors.torch import load_file
from transformers import AutoTokenizer, BertConfig, BertModel

ap = argparse.ArgumentParser()
ap.add_argument("--reference", required=True); ap.add_argument("--model-dir", required=True); ap.add_argument("--data-dir", required=True)
ap.add_argument("--task", required=True); ap.add_argument("--r", type=int, default=8); ap.add_argument("--alpha", type=float, default=16)
ap.add_argument("--dropout", type=float, default=0.1); ap.add_argument("--targets", default="query,value")
ap.add_argument("--lr", type=float, default=5e-4); ap.add_argument("--epochs", type=int, default=3); ap.add_argument("--batch", type=int, default=32)
ap.add_argument("--max-len", type=int, default=128); ap.add_argument("--seed", type=int, default=42)
ap.add_argument("--warmup", type=float, default=0.1); ap.add_argument("--wd", type=float, default=0.01)
a = ap.parse_args()
spec = importlib.util.spec_from_file_location("hf_glue_reference", a.reference)
ref = importlib.util.module_from_spec(spec); spec.loader.exec_module(ref)

random.seed(a.seed); torch.manual_seed(a.seed)
tok = AutoTokenizer.from_pretrained(a.model_dir)
t = ref.TASKS[a.task]
train, dev = ref.read(os.path.join(a.data_dir, "train.tsv"), t), ref.read(os.path.join(a.data_dir, "dev.tsv"), t)
if t["kind"] == "cls":
    labels = sorted({r[2] for r in train}); lid = {l: i for i, l in enumerate(labels)}; n_out = len(labels); y = lambda r: lid[r[2]]
else:
    n_out = 1; y = lambda r: float(r[2])

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        cfg = BertConfig.from_pretrained(a.model_dir)
        self.bert = BertModel(cfg, add_pooling_layer=False)
        sd = {k: v.float() for k, v in load_file(os.path.join(a.model_dir, "model.safetensors")).items() if not k.startswith("pooler")}
        missing, unexpected = self.bert.load_state_dict(sd, strict=False)
        assert not unexpected, unexpected
        assert all("position_ids" in k for k in missing), missing
        self.drop = nn.Dropout(cfg.hidden_dropout_prob); self.head = nn.Linear(cfg.hidden_size, n_out)
    def forward(self, **enc):
        return self.head(self.drop(self.bert(**enc).last_hidden_state[:, 0]))

model = peft.get_peft_model(Model(), peft.LoraConfig(r=a.r, lora_alpha=a.alpha, lora_dropout=a.dropout,
                                                      target_modules=a.targets.split(","), modules_to_save=["head"])).cuda()
params = [p for p in model.parameters() if p.requires_grad]
decay = [p for n, p in model.named_parameters() if p.requires_grad and not (n.endswith("bias") or "LayerNorm" in n)]
nodecay = [p for n, p in model.named_parameters() if p.requires_grad and (n.endswith("bias") or "LayerNorm" in n)]
opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.wd}, {"params": nodecay, "weight_decay": 0.0}], lr=a.lr)
steps = a.epochs * math.ceil(len(train) / a.batch); warm = int(a.warmup * steps)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: s / max(1, warm) if s < warm else max(0.0, (steps - s) / max(1, steps - warm)))

def batches(rows, shuffle):
    idx = list(range(len(rows)))
    if shuffle: random.shuffle(idx)
    for i in range(0, len(idx), a.batch):
        rs = [rows[j] for j in idx[i:i + a.batch]]
        enc = tok([r[0] for r in rs], [r[1] for r in rs] if t["b"] is not None else None,
                  truncation=True, max_length=a.max_len, padding=True, return_tensors="pt")
        yield {k: v.cuda() for k, v in enc.items()}, torch.tensor([y(r) for r in rs]).cuda()

def evaluate():
    model.eval(); pred = []
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        for enc, _ in batches(dev, False):
            o = model(**enc).float()
            pred += (o.argmax(-1).tolist() if t["kind"] == "cls" else o[:, 0].tolist())
    model.train(); return ref.metric(t["metric"], pred, [y(r) for r in dev])

best = -1e9; hist = []; t0 = time.time(); model.train()
for ep in range(a.epochs):
    for enc, lab in batches(train, True):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            o = model(**enc).float()
        loss = nn.functional.cross_entropy(o, lab) if t["kind"] == "cls" else nn.functional.mse_loss(o[:, 0], lab.float())
        opt.zero_grad(set_to_none=True); loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0); opt.step(); sched.step()
    m = evaluate(); hist.append(round(m, 4)); best = max(best, m)
print(json.dumps(dict(task=a.task, method="peft-lora", r=a.r, alpha=a.alpha, dropout=a.dropout, targets=a.targets, lr=a.lr, epochs=a.epochs,
                      batch=a.batch, seed=a.seed, metric=t["metric"], best=round(best, 4), per_epoch=hist,
                      trainable=sum(p.numel() for p in params), peft=peft.__version__, seconds=round(time.time() - t0, 1))), flush=True)
