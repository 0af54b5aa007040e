"""The allow-list: which imported names a pickle may use, and how.

The base list is exactly what ``torch.load(weights_only=True)`` accepts by default (torch
2.13's ``torch/_weights_only_unpickler.py::_get_allowed_globals``; a test compares it with the
installed torch): storages, dtypes, tensor rebuild functions, ``OrderedDict``, ``torch.Size``...

On top of it, vetted extras for the legitimate pickles a Trainer run writes beside the weights,
each allowed only in its own file and only in the way those files use it ("call" = REDUCE,
"new" = NEWOBJ/BUILD of a class instance, "value" = passed as an argument):

- ``training_args.bin``: transformers' ``TrainingArguments`` and the enums / accelerate state it
  holds, plus the argument classes of LLaVA and TRL built the same way;
- ``rng_state*.pth`` (and accelerate's ``random_states_N.pkl``): numpy's ``RandomState`` array
  (what transformers' ``trainer_pt_utils.safe_globals()`` allow-lists when ``_load_rng_state``
  resumes: ``np.core.multiarray._reconstruct``, ``np.ndarray``, ``np.dtype``);
- DeepSpeed ZeRO files (``*_model_states.pt`` / ``*_optim_states.pt``, in ``global_stepN/`` or an
  mmengine ``iter_N.pth/`` folder): what ``DeepSpeedEngine._save_checkpoint`` /
  ``_save_zero_checkpoint`` and the ZeRO optimizers' ``state_dict()`` pickle beside tensors and
  plain values: the loss scaler object (``LossScaler`` / ``DynamicLossScaler``, built by NEWOBJ +
  BUILD), the ``ZeroStageEnum`` member, and the ``fragment_address`` dataclasses of
  ``param_slice_mappings``;
- mmengine / XTuner checkpoints (``iter_N.pth`` / ``epoch_N.pth`` files, and the DeepSpeed files
  inside an ``iter_N.pth/`` folder, whose ``client_state`` carries the same entries): the
  ``message_hub`` state holds ``HistoryBuffer`` objects of numpy arrays, and runtime info may hold
  numpy scalars (``Runner.save_checkpoint`` / ``FlexibleRunner.save_checkpoint``,
  ``MessageHub.state_dict``); ``meta``, ``param_schedulers`` and optimizer states are plain.

The Trainer's ``optimizer.pt``, ``scheduler.pt`` and ``scaler.pt`` (torch optimizer, LR scheduler
and GradScaler ``state_dict()``s) need nothing beyond torch's own list, so they get no extras.
A file may have several roles (``deepspeed+mmengine``); each role's extras apply.

Anything else is refused and named; names that are known code-execution primitives get a
sharper message.
"""

from __future__ import annotations

import re
from pathlib import PurePath

from doctor.files import DCP_METADATA_RE, DEEPSPEED_STATE_RE, RNG_STATE_RE, TRAINING_ARGS, in_mmengine_save

_TORCH_TYPES = (
    "BFloat16 Bool Byte Char Double Float Half Int Long Short".split()
)
_DTYPES = (
    "bfloat16 bits16 bits1x8 bits2x4 bits4x2 bits8 bool complex128 complex32 complex64 float16 float32 "
    "float4_e2m1fn_x2 float64 float8_e4m3fn float8_e4m3fnuz float8_e5m2 float8_e5m2fnuz float8_e8m0fnu "
    "int1 int16 int2 int3 int32 int4 int5 int6 int64 int7 int8 qint32 qint8 quint2x4 quint4x2 quint8 "
    "uint1 uint16 uint2 uint3 uint32 uint4 uint5 uint6 uint64 uint7 uint8 "
    "per_channel_affine per_channel_affine_float_qparams per_channel_symmetric per_tensor_affine "
    "per_tensor_symmetric"
).split()
_REBUILD = (
    "_rebuild_device_tensor_from_cpu_tensor _rebuild_device_tensor_from_numpy _rebuild_meta_tensor_no_storage "
    "_rebuild_nested_tensor _rebuild_parameter _rebuild_parameter_with_state _rebuild_qtensor "
    "_rebuild_sparse_tensor _rebuild_tensor _rebuild_tensor_v2 _rebuild_tensor_v3 _rebuild_wrapper_subclass"
).split()


def _torch_allowed() -> frozenset[str]:
    names = {
        "_codecs.encode", "builtins.bytearray", "builtins.complex", "builtins.set",
        "collections.Counter", "collections.OrderedDict", "torch.Size", "torch.Tensor", "torch.device",
        "torch._tensor._rebuild_from_type_v2", "torch.nn.parameter.Parameter",
        "torch.serialization._get_layout", "torch.storage.TypedStorage", "torch.storage.UntypedStorage",
    }
    names |= {f"torch.{d}" for d in _DTYPES}
    names |= {f"torch._utils.{f}" for f in _REBUILD}
    for t in _TORCH_TYPES:
        names |= {f"torch.{t}Storage", f"torch.{t}Tensor", f"torch.cuda.{t}Storage", f"torch.cuda.{t}Tensor"}
        if t != "Bool":
            names |= {f"torch.sparse.{t}Tensor", f"torch.cuda.sparse.{t}Tensor"}
    names |= {"torch.ComplexDoubleStorage", "torch.ComplexFloatStorage", "torch.cuda.ComplexDoubleStorage",
              "torch.cuda.ComplexFloatStorage", "torch.QInt32Storage", "torch.QInt8Storage",
              "torch.QUInt2x4Storage", "torch.QUInt4x2Storage", "torch.QUInt8Storage"}
    return frozenset(names)


TORCH_ALLOWED: frozenset[str] = _torch_allowed()

# role -> {global: allowed uses}
_TRAINER_ENUMS = (
    "transformers.trainer_utils.IntervalStrategy transformers.trainer_utils.SaveStrategy "
    "transformers.trainer_utils.HubStrategy transformers.trainer_utils.SchedulerType "
    "transformers.trainer_utils.EvaluationStrategy transformers.trainer_utils.FSDPOption "
    "transformers.trainer_utils.ShardedDDPOption transformers.training_args.OptimizerNames "
    "transformers.training_args.ParallelMode transformers.debug_utils.DebugOption "
    "accelerate.utils.dataclasses.DistributedType accelerate.utils.dataclasses.PrecisionType "
    "accelerate.utils.dataclasses.DynamoBackend accelerate.utils.dataclasses.ComputeEnvironment"
).split()
_TRAINER_CLASSES = (
    "transformers.training_args.TrainingArguments transformers.training_args_seq2seq.Seq2SeqTrainingArguments "
    "transformers.trainer_pt_utils.AcceleratorConfig transformers.integrations.deepspeed.HfTrainerDeepSpeedConfig "
    "transformers.deepspeed.HfTrainerDeepSpeedConfig transformers.integrations.deepspeed.HfDeepSpeedConfig "
    "accelerate.utils.dataclasses.DeepSpeedPlugin accelerate.state.PartialState accelerate.state.AcceleratorState "
    "llava.train.train.TrainingArguments trl.trainer.sft_config.SFTConfig trl.trainer.dpo_config.DPOConfig "
    "trl.trainer.orpo_config.ORPOConfig trl.trainer.kto_config.KTOConfig trl.trainer.reward_config.RewardConfig "
    "trl.trainer.grpo_config.GRPOConfig"
).split()
_NUMPY = ("numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct")
_NUMPY_SCALAR = ("numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar")
_NUMPY_ARRAYS: dict[str, frozenset[str]] = {
    **{name: frozenset({"call", "build"}) for name in _NUMPY},
    "numpy.ndarray": frozenset(),
    "numpy.dtype": frozenset({"call", "build"}),
}

# torch.distributed.checkpoint's .metadata (torch/distributed/checkpoint/metadata.py and filesystem.py;
# torch <= 2.2 kept TensorProperties and the memory-format enum in distributed/_shard/sharded_tensor/metadata.py):
# dataclasses built from their fields, the enum called with its value, the checkpoint id as a path
_DCP = "torch.distributed.checkpoint."
_DCP_CLASSES = (
    f"{_DCP}metadata.Metadata {_DCP}metadata.MetadataIndex {_DCP}metadata.StorageMeta "
    f"{_DCP}metadata.TensorProperties {_DCP}metadata.TensorStorageMetadata {_DCP}metadata.ChunkStorageMetadata "
    f"{_DCP}metadata.BytesStorageMetadata {_DCP}filesystem._StorageInfo "
    "torch.distributed._shard.sharded_tensor.metadata.TensorProperties"
).split()
_DCP_CALLED = (
    f"{_DCP}metadata._MEM_FORMAT_ENCODING torch.distributed._shard.sharded_tensor.metadata.MEM_FORMAT_ENCODING "
    "pathlib.PosixPath pathlib.WindowsPath pathlib.PurePosixPath pathlib.PureWindowsPath "
    "pathlib._local.PosixPath pathlib._local.WindowsPath pathlib._local.PurePosixPath pathlib._local.PureWindowsPath"
).split()

EXTRAS: dict[str, dict[str, frozenset[str]]] = {
    "training-args": {
        **{name: frozenset({"call"}) for name in _TRAINER_ENUMS},
        **{name: frozenset({"new", "build"}) for name in _TRAINER_CLASSES},
    },
    "rng-state": {
        **_NUMPY_ARRAYS,
        "numpy.dtypes.UInt32DType": frozenset(),
    },
    "deepspeed": {
        "deepspeed.runtime.zero.config.ZeroStageEnum": frozenset({"call"}),
        "deepspeed.runtime.fp16.loss_scaler.LossScaler": frozenset({"new", "build"}),
        "deepspeed.runtime.fp16.loss_scaler.DynamicLossScaler": frozenset({"new", "build"}),
        "deepspeed.utils.tensor_fragment.fragment_address": frozenset({"call", "new", "build"}),
    },
    "dcp-metadata": {
        **{name: frozenset({"new", "build"}) for name in _DCP_CLASSES},
        **{name: frozenset({"call"}) for name in _DCP_CALLED},
    },
    "mmengine": {
        **_NUMPY_ARRAYS,
        **{name: frozenset({"call"}) for name in _NUMPY_SCALAR},
        "mmengine.logging.history_buffer.HistoryBuffer": frozenset({"new", "build"}),
    },
}

# Names that execute, import or evaluate arbitrary things: a finding says so plainly.
_DANGEROUS_MODULES = frozenset({
    "os", "posix", "nt", "subprocess", "sys", "runpy", "importlib", "pkgutil", "functools", "operator",
    "types", "pickle", "_pickle", "marshal", "shutil", "socket", "webbrowser", "code", "codeop", "pty",
    "ctypes", "asyncio", "multiprocessing", "pdb", "bdb", "timeit", "cProfile", "profile", "trace",
    "dill", "joblib", "cloudpickle", "torch.serialization", "torch.hub", "torch.jit", "torch._C",
    "torch._dynamo", "torch.utils.cpp_extension", "numpy.lib.npyio", "numpy.testing",
})
_DANGEROUS_NAMES = frozenset({
    "builtins.eval", "builtins.exec", "builtins.compile", "builtins.getattr", "builtins.setattr",
    "builtins.__import__", "builtins.open", "builtins.breakpoint", "builtins.input", "builtins.globals",
    "builtins.vars", "builtins.apply", "numpy.load", "torch.load", "torch.save",
})

_UNVETTED_CLASS = re.compile(r"^[A-Z]\w*(Arguments|Config)$")


def role_of(path: str) -> str | None:
    """Which vetted extras a file may use, from its name and folder (``doctor.files`` patterns):
    ``training-args``, ``rng-state``, ``dcp-metadata``, ``deepspeed``, ``mmengine`` or ``deepspeed+mmengine``."""
    p = PurePath(path)
    name = p.name
    if name == TRAINING_ARGS:
        return "training-args"
    if RNG_STATE_RE.match(name):
        return "rng-state"
    if DCP_METADATA_RE.match(name):
        return "dcp-metadata"
    roles = []
    if DEEPSPEED_STATE_RE.search(name):
        roles.append("deepspeed")
    if in_mmengine_save(p):
        roles.append("mmengine")
    return "+".join(roles) or None


def is_dangerous(full: str) -> bool:
    """A known code-execution primitive (for a sharper message; the allow-list decides)."""
    if full in _DANGEROUS_NAMES:
        return True
    parts = full.split(".")
    return any(".".join(parts[:i]) in _DANGEROUS_MODULES for i in range(1, len(parts)))


def verdict(full: str, uses: set[str], role: str | None) -> str | None:
    """None when allowed; otherwise "refused" or "unvetted" (a Trainer-args class that is only
    instantiated, never called, in ``training_args.bin``)."""
    if full in TORCH_ALLOWED:
        return None
    allowed: frozenset[str] | None = None
    for one in (role or "").split("+"):
        if full in EXTRAS.get(one, {}):
            allowed = EXTRAS[one][full] | (allowed or frozenset())
    if allowed is not None:
        return None if uses <= allowed else "misused"
    if role == "training-args" and not is_dangerous(full) and uses <= {"new", "build"}:
        if _UNVETTED_CLASS.match(full.rpartition(".")[2]):
            return "unvetted"
    return "refused"
