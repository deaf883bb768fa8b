#!/usr/bin/env python3
"""
make_tok_goldens.py - writes tests/fixtures/tokenizers/goldens.json, the HF
oracle for tests/engine/test_tokenizer.c: encode ids (with and without special
tokens) and decode texts (with and without skipping special tokens) from the
`tokenizers` library on the real tokenizer.json files, cross-checked against
transformers' AutoTokenizer, plus chat renders from apply_chat_template.

Run once by hand (needs tokenizers + transformers; not in CI):
    PYTHON_WITH_TOKENIZERS_AND_TRANSFORMERS tests/engine/make_tok_goldens.py
"""
import json
import os
import sys

from tokenizers import Tokenizer
from transformers import AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "data", "tokenizers")
OUT = os.path.join(ROOT, "tests", "fixtures", "tokenizers", "goldens.json")

# name -> directory; "dir" is relative to the repo root (fixture) or to
# ../shared/data/tokenizers (shared data), as the C test resolves it.
TOKENIZERS = [
    ("mistral", "shared", os.path.join(SHARED, "mistral")),
    ("qwen3", "shared", os.path.join(SHARED, "qwen3")),
    ("smollm2", "fixture", os.path.join(ROOT, "tests", "fixtures", "tokenizers", "smollm2")),
]

TEXTS = [
    "",
    " ",
    "Hello world",
    " Hello world",
    "Hello, my dog is cute",
    "12345 abc's",
    "naïve café 日本語 🤖",
    "  multiple   spaces\n\nnewline",
    "The quick brown fox jumps over the lazy dog.",
    "Ünïcödé àccénts: résumé, Ångström, façade, Øre",
    "中文分词测试：你好，世界！今天天气很好。",
    "日本語のテキストとカタカナ、ひらがな。",
    "한국어 텍스트입니다",
    "Emoji: 😀😃😄 👍🏽 👩‍👩‍👧‍👦 🏳️‍🌈 ❤️",
    "ZWJ family 👨‍👩‍👧 and skin 👋🏿👋🏻",
    "tabs\tand\t\ttabs",
    "line1\nline2\n\n\nline5",
    "windows\r\nline\r\nendings\r\n",
    "trailing spaces   ",
    "   leading spaces",
    "\n\n\n",
    "def f(x):\n    return x * 2  # double\n\nprint(f(21))",
    "int main(void) {\n\tprintf(\"%d\\n\", 1234567);\n\treturn 0;\n}",
    "numbers 1234567 and 3.14159 and 1,000,000 and 42",
    "I'll say it's we've they're I'm you'd he'll",
    "IT'S SHOUTING, WE'LL SEE",
    "<|im_start|>user\nhi<|im_end|>",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "text with </s> inside and <s> too",
    "<s>[INST] hello [/INST]",
    "<|endoftext|>",
    "a<|endoftext|>b <|im_end|> c",
    "Mixed: English, Français, Deutsch (Größe), Español (niño), Русский язык, Ελληνικά, العربية, עברית",
    "Math: ∑_{i=1}^{n} x_i ≤ ∞, √2 ≈ 1.414, π·r²",
    "URLs: https://example.com/path?query=1&x=y#frag and user@example.org",
    "JSON: {\"key\": [1, 2, 3], \"nested\": {\"a\": null, \"b\": true}}",
    "ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３",
    "combining: e\u0301 a\u0300 n\u0303 (decomposed) vs é à ñ",
    "rare: \u2028\u2029 \u00a0nbsp \u200bzero width",
    "____----====****////",
    "a" * 300,
    "   \t \n \r\n  x",
]

# Independent checks from engine.md section 6 (measured with npm oracles).
KNOWN = {
    "mistral": {
        "Hello world": [1, 22557, 1526],
        " Hello world": [1, 28705, 22557, 1526],
        "Hello, my dog is cute": [1, 22557, 28725, 586, 3914, 349, 17949],
        "  multiple   spaces\n\nnewline": [1, 259, 5166, 259, 10599, 13, 13, 1095, 1081],
    },
    "qwen3": {
        "Hello world": [9707, 1879],
        " Hello world": [21927, 1879],
        "Hello, my dog is cute": [9707, 11, 847, 5562, 374, 18838],
        "12345 abc's": [16, 17, 18, 19, 20, 39022, 594],
        "naïve café 日本語 🤖": [3376, 37572, 586, 51950, 75402, 21894, 102819, 11162, 97, 244],
        "  multiple   spaces\n\nnewline": [220, 5248, 256, 12621, 271, 89202],
        "<|im_start|>user\nhi<|im_end|>": [151644, 872, 198, 6023, 151645],
    },
}

# Mistral's tokenizer_config.json here has no chat_template; these are the
# templates of Mistral-7B-Instruct-v0.2 (system prepended to the first user
# turn), Llama-2-chat, Zephyr and Llama 3, rendered with the tokenizer's own
# bos/eos so the C renderer can be compared for every format.
MISTRAL_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {%- set system_message = messages[0]['content'] %}\n"
    "    {%- set loop_messages = messages[1:] %}\n"
    "{%- else %}\n"
    "    {%- set loop_messages = messages %}\n"
    "{%- endif %}\n\n"
    "{{- bos_token }}\n"
    "{%- for message in loop_messages %}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n"
    "        {{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}\n"
    "    {%- endif %}\n"
    "    {%- if message['role'] == 'user' %}\n"
    "        {%- if loop.first and system_message is defined %}\n"
    "            {{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}\n"
    "        {%- else %}\n"
    "            {{- ' [INST] ' + message['content'] + ' [/INST]' }}\n"
    "        {%- endif %}\n"
    "    {%- elif message['role'] == 'assistant' %}\n"
    "        {{- ' ' + message['content'] + eos_token}}\n"
    "    {%- else %}\n"
    "        {{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
)
LLAMA2_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
)
ZEPHYR_TEMPLATE = (
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n"
    "{{ '<|user|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n"
    "{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}"
)
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

# The original Mistral-7B-Instruct-v0.1 template: no system role, no
# spaces around [INST] turns.
MISTRAL_V01_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}"
    "{% endfor %}"
)

CHATS = [
    [{"role": "user", "content": "Hello!"}],
    [{"role": "system", "content": "You are a pirate."}, {"role": "user", "content": "Hi there"}],
    [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3+3?"},
    ],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Name a color."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "Another, with émoji 🎨?"},
    ],
]


TINY_TEXTS = [
    "", " ", "Hello world", " Hello  world ", "12345 abc's 67", "naïve café 日本語 🤖",
    "  multiple   spaces\n\nnewline\t\ttab", "windows\r\nline", "a<|x|>b  <|x|>  c[R]   d",
    "cat concat cat. cats cat_ cat", "ﬁ ligature ＡＢＣ ① ²", "e\u0301 vs é", "x</s>y <s> z",
    "def f(x):\n    return 42", "zzzz qqqq", "\u00a0nbsp\u3000ideo",
]
TINY_CORPUS = [t for t in TEXTS if t] * 3 + ["hello world hello there the cat sat on the mat"] * 5


def tiny_tokenizers():
    """Small tokenizers trained here, then re-dressed with each component
    variant the C code implements; stored as a shared base (model) plus
    per-variant overrides of the other top-level keys."""
    from tokenizers import AddedToken, Regex, decoders, models, normalizers
    from tokenizers import pre_tokenizers as pt
    from tokenizers import processors, trainers

    # Byte-level family.
    bl = Tokenizer(models.BPE())
    bl.pre_tokenizer = pt.ByteLevel(add_prefix_space=False)
    bl.train_from_iterator(TINY_CORPUS, trainers.BpeTrainer(
        vocab_size=420, initial_alphabet=pt.ByteLevel.alphabet(), show_progress=False))
    bl_base = json.loads(bl.to_str())
    # SentencePiece family: limited alphabet, then byte-fallback tokens.
    sp = Tokenizer(models.BPE(unk_token="<unk>"))
    sp.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    sp.train_from_iterator(TINY_CORPUS, trainers.BpeTrainer(
        vocab_size=200, limit_alphabet=40, special_tokens=["<unk>", "<s>", "</s>"],
        show_progress=False))
    sp_base = json.loads(sp.to_str())
    vocab = sp_base["model"]["vocab"]
    for b in range(256):
        vocab.setdefault("<0x%02X>" % b, len(vocab))
    sp_base["model"]["byte_fallback"] = True
    sp_base["model"]["fuse_unk"] = True

    def dress(base, **parts):
        tk = Tokenizer.from_str(json.dumps(base))
        for k, v in parts.items():
            if k == "added":
                tk.add_special_tokens([a for a in v if a.special])
                tk.add_tokens([a for a in v if not a.special])
            else:
                setattr(tk, k, v)
        return tk

    bl_added = [AddedToken("<|x|>", special=True, lstrip=True, normalized=False),
                AddedToken("[R]", special=False, rstrip=True, normalized=False),
                AddedToken("cat", special=False, single_word=True, normalized=False),
                AddedToken("ＡＢ", special=False, normalized=True)]
    variants = []
    split_re = Regex(r"\s+|\d")
    for beh in ["removed", "isolated", "merged_with_previous", "merged_with_next", "contiguous"]:
        for inv in (False, True):
            variants.append((f"bl_split_{beh}_{int(inv)}", "bl", dress(
                bl_base, pre_tokenizer=pt.Sequence([pt.Split(split_re, beh, invert=inv),
                                                    pt.ByteLevel(False, use_regex=False)]),
                decoder=decoders.ByteLevel())))
    variants.append(("bl_string_split", "bl", dress(
        bl_base, pre_tokenizer=pt.Sequence([pt.Split("o", "merged_with_next"),
                                            pt.ByteLevel(False, use_regex=False)]),
        decoder=decoders.ByteLevel())))
    variants.append(("bl_gpt2_prefix_added", "bl", dress(
        bl_base, normalizer=normalizers.NFKC(),
        pre_tokenizer=pt.Sequence([pt.Digits(individual_digits=True),
                                   pt.ByteLevel(add_prefix_space=True, use_regex=True)]),
        decoder=decoders.ByteLevel(), added=bl_added)))
    variants.append(("bl_digits_nfd", "bl", dress(
        bl_base, normalizer=normalizers.Sequence([normalizers.NFD(), normalizers.Strip()]),
        pre_tokenizer=pt.Sequence([pt.Digits(individual_digits=False),
                                   pt.ByteLevel(add_prefix_space=False, use_regex=True)]),
        decoder=decoders.ByteLevel(),
        post_processor=processors.TemplateProcessing(
            single="<|x|> $A <|x|>", special_tokens=[("<|x|>", 420)]),
        added=[AddedToken("<|x|>", special=True, normalized=False)])))
    for scheme in ["always", "first", "never"]:
        for split in (True, False):
            variants.append((f"sp_metaspace_{scheme}_{int(split)}", "sp", dress(
                sp_base, normalizer=None,
                pre_tokenizer=pt.Metaspace(replacement="▁", prepend_scheme=scheme, split=split),
                decoder=decoders.Sequence([decoders.Metaspace(replacement="▁",
                                                              prepend_scheme=scheme),
                                           decoders.ByteFallback()]))))
    variants.append(("sp_legacy", "sp", dress(
        sp_base,
        decoder=decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                   decoders.Fuse(), decoders.Strip(" ", 1, 0)]),
        post_processor=processors.TemplateProcessing(
            single="<s> $A", special_tokens=[("<s>", 1)]))))
    nobf = json.loads(json.dumps(sp_base))
    nobf["model"]["byte_fallback"] = False
    nobf["model"]["fuse_unk"] = False
    variants.append(("sp_unk_nofuse", "sp_nobf", dress(
        nobf, decoder=decoders.Sequence([decoders.Replace("▁", " "), decoders.Fuse(),
                                         decoders.Strip(" ", 1, 0)]))))
    bases = {"bl": bl_base, "sp": sp_base, "sp_nobf": nobf}
    out = []
    for name, base, tk in variants:
        full = json.loads(tk.to_str())
        over = {k: v for k, v in full.items() if k != "model"}
        assert full["model"] == json.loads(json.dumps(bases[base]["model"])) or base == "bl", name
        cases = []
        for text in TINY_TEXTS:
            ids = tk.encode(text, add_special_tokens=True).ids
            cases.append({"text": text, "ids_special": ids,
                          "ids": tk.encode(text, add_special_tokens=False).ids,
                          "decode": tk.decode(ids, skip_special_tokens=False),
                          "decode_skip": tk.decode(ids, skip_special_tokens=True)})
        out.append({"name": name, "base": base, "override": over, "cases": cases})
    return {"bases": {k: v["model"] for k, v in bases.items()}, "variants": out}


def check_known(name, tk):
    for text, ids in KNOWN.get(name, {}).items():
        got = tk.encode(text, add_special_tokens=True).ids
        if got != ids:
            sys.exit(f"{name}: engine.md golden mismatch for {text!r}: {got} != {ids}")


def main():
    out = {"tokenizers": [], "chats": []}
    for name, where, d in TOKENIZERS:
        tk = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
        hf = AutoTokenizer.from_pretrained(d)
        check_known(name, tk)
        cases = []
        for text in TEXTS:
            ids_sp = tk.encode(text, add_special_tokens=True).ids
            ids = tk.encode(text, add_special_tokens=False).ids
            # transformers should agree with the tokenizers library; v5
            # rebuilds Llama-class pipelines itself (Metaspace instead of the
            # file's Prepend normalizer), so Mistral differs on leading
            # spaces. The goldens follow tokenizer.json, as thaw does.
            if hf.encode(text, add_special_tokens=True) != ids_sp:
                print(f"warn {name}: transformers ids differ for {text!r}", file=sys.stderr)
            dec = tk.decode(ids_sp, skip_special_tokens=False)
            dec_skip = tk.decode(ids_sp, skip_special_tokens=True)
            if hf.decode(ids_sp, skip_special_tokens=False) != dec:
                print(f"warn {name}: transformers decode differs for {text!r}", file=sys.stderr)
            cases.append({"text": text, "ids_special": ids_sp, "ids": ids,
                          "decode": dec, "decode_skip": dec_skip,
                          "roundtrip": tk.decode(ids, skip_special_tokens=False) == text})
        # Byte-fallback / odd ids decoded on their own (not from encode).
        extra = []
        if name == "mistral":
            seqs = [[1, 415, 28705, 243, 162, 167, 153, 2], [243, 162, 1526], [162, 167],
                    [28705, 28705, 22557], [2, 28705, 22557], [13, 13, 22557],
                    [0, 1, 2, 22557]]
        elif name == "qwen3":
            seqs = [[9707, 151645, 1879], [11162, 97], [97, 244], [151643, 151644],
                    [220, 220, 151668, 9707], [11162]]
        else:
            seqs = [[1, 2, 3, 4], [28, 28, 28], [0, 1, 2]]
        for s in seqs:
            extra.append({"ids": s, "decode": tk.decode(s, skip_special_tokens=False),
                          "decode_skip": tk.decode(s, skip_special_tokens=True)})
        out["tokenizers"].append({
            "name": name, "where": where, "dir": name if where == "shared"
            else "tests/fixtures/tokenizers/smollm2",
            "n_tokens": tk.get_vocab_size(with_added_tokens=True),
            "bos": hf.bos_token_id if hf.bos_token_id is not None else -1,
            "eos": hf.eos_token_id if hf.eos_token_id is not None else -1,
            "cases": cases, "decode_only": extra,
        })

        # Chat renders: the tokenizer's own template (SmolLM2, Qwen3), or
        # given templates with this tokenizer's bos/eos (Mistral).
        if name == "mistral":
            templates = [("mistral", MISTRAL_TEMPLATE), ("llama2", LLAMA2_TEMPLATE),
                         ("zephyr", ZEPHYR_TEMPLATE), ("mistral", MISTRAL_V01_TEMPLATE)]
        else:
            templates = [("auto", None)]
        for fmt, tpl in templates:
            for msgs in CHATS:
                if fmt in ("mistral", "llama2") and msgs[-1]["role"] != "user":
                    continue
                if tpl is MISTRAL_V01_TEMPLATE and msgs[0]["role"] == "system":
                    continue
                text = hf.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True,
                                              chat_template=tpl)
                # "template": the C test also loads the tokenizer with this
                # template in its config and renders with format auto.
                out["chats"].append({"tokenizer": name, "format": fmt, "messages": msgs,
                                     "render": text, "template": tpl})
        if name == "qwen3":
            # Llama 3: rendered with its own bos token text.
            for msgs in CHATS:
                text = hf.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True,
                                              chat_template=LLAMA3_TEMPLATE,
                                              bos_token="<|begin_of_text|>")
                out["chats"].append({"tokenizer": name, "format": "llama3", "messages": msgs,
                                     "render": text, "template": LLAMA3_TEMPLATE})
    out["tiny"] = tiny_tokenizers()
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=None, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes)")


if __name__ == "__main__":
    main()
