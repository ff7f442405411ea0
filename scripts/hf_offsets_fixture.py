"""Writes HF tokenizers' offsets for every text of ../shared/fixtures/tokenizer/bert_uncased_cases.jsonl (and text
pairs made from them), for TokenizerOffsetParityTests: the reference our EncodeWithOffsets must equal.

    python3 scripts/hf_offsets_fixture.py MODEL_DIR CASES_JSONL OUT_JSONL

MODEL_DIR holds vocab.txt and tokenizer_config.json (scripts/gpu-prepare.sh's .gpu/model). The tokenizer must give the
fixture's own input_ids for every case first, so that a tokenizer loaded wrong cannot make the reference.

Runs where transformers is installed (the GPU host). Offsets are HF's: code points of the Python string."""
import json
import sys

from transformers import BertTokenizerFast

model_dir, cases, out = sys.argv[1:4]
tokenizer = BertTokenizerFast.from_pretrained(model_dir)
texts = []
for line in open(cases, encoding="utf-8"):
    if line.strip():
        case = json.loads(line)
        ids = tokenizer(case["text"], case.get("text_pair"), truncation=case["max_length"] is not None,
                        max_length=case["max_length"])["input_ids"]
        if ids != case["input_ids"]:
            sys.exit(f"the tokenizer gives {ids} for {case['text']!r}, the fixture {case['input_ids']}")
        for text in (case["text"], case.get("text_pair")):
            if text and text not in texts:
                texts.append(text)
with open(out, "w", encoding="utf-8") as f:
    for i, text in enumerate(texts):
        for pair in (None, texts[(i + 1) % len(texts)]):
            for max_length in (None, 16):
                enc = tokenizer(text, pair, truncation=max_length is not None, max_length=max_length,
                                return_offsets_mapping=True)
                f.write(json.dumps({"text": text, "text_pair": pair, "max_length": max_length,
                                    "input_ids": enc["input_ids"], "offsets": [list(o) for o in enc["offset_mapping"]],
                                    "word_ids": [(-1 if w is None else w) for w in enc.word_ids()],
                                    "transformers": __import__("transformers").__version__}) + "\n")
print(f"{len(texts)} texts", file=sys.stderr)
