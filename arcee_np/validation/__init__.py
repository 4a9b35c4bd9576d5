"""The validation layer: everything that comes from outside is checked here, once, before any work.

One module per surface, each raising the library's own errors (``arcee_np.errors``) with the thing, its
value and the fix; the code behind a surface trusts what it is handed.

* ``files``: reading and writing files of any kind (missing, unreadable, not UTF-8, not JSON, too deep);
* ``config``: config.json and ArceeConfig fields, the v4/v5 RoPE spellings;
* ``generation``: the knobs of ``generate`` (call arguments, ``model.generation_config``, generation_config.json);
* ``safetensors``: a safetensors header, entry by entry and as a whole (offsets, shapes, dtypes, metadata);
* ``checkpoint``: the sharded index, the checkpoint's tensors against the config;
* ``finite``: NaN/Inf in weights (at load);
* ``arguments``: the arguments of a forward call, the heads' labels, the KV cache;
* ``tokenizer``: tokenizer.json, tokenizer_config.json, chat templates, encode/decode arguments;
* ``tracefile``: a trace file's metadata;
* ``cli``: what the command line names (paths to read and write, token ids);
* ``memory``: allocations that cannot fit (a random model of a huge config, logits, generate's KV cache);
* ``values``: single values (integers, finite numbers, flags, token ids), shared by the others.

docs/errors.md lists the error classes and what raises each.
"""
