"""A fuzzer for the checkpoint readers: seed files of every format, seeded mutations, invariants.

``corpus`` writes small valid checkpoints with the real libraries, ``mutate`` breaks them in
seeded ways (bit flips, truncation, lying headers, pickle payloads, ONNX protobuf fields,
TorchScript records and code text …), ``harness`` opens and reads each mutated checkpoint
and classifies the outcome. ``python -m tests.fuzz`` runs a campaign in worker processes (a
crash or a hang is counted, not fatal); ``test_fuzz_readers`` runs a quick slice in CI. See
docs/fuzzing.md.
"""
