"""arcee_np: the Arcee (AFM-4.5B family) decoder of transformers as plain NumPy/CuPy array functions.

Quick use::

    from arcee_np import ArceeForCausalLM
    model = ArceeForCausalLM.from_pretrained(path)           # a transformers checkpoint folder
    out = model(input_ids)                                  # out.logits: [B, T, V]
"""

from . import moved
from .cache import KVCache
from .config import ArceeConfig
from .errors import (ArceeError, CacheError, CheckpointError, ConfigError, DeviceError, FileAccessError, InputError,
                     InputTypeError, MissingFileError, NonFiniteError, TokenizerError, TraceFileError, UsageError)
from .models import (ArceeForCausalLM, ArceeForQuestionAnswering, ArceeForSequenceClassification,
                     ArceeForTokenClassification, ArceeModel, ArceePreTrainedModel)
from .outputs import QuestionAnsweringModelOutput, SequenceClassifierOutputWithPast, TokenClassifierOutput
from .shipped import default_model_path
from .trace import detect_nonfinite, trace

__version__ = "0.3.0"

moved.install()  # the old import paths (arcee_np.compare ...) keep working for a release, with a warning

__all__ = ["ArceeConfig", "ArceeError", "ArceeForCausalLM", "ArceeForQuestionAnswering",
           "ArceeForSequenceClassification", "ArceeForTokenClassification", "ArceeModel", "ArceePreTrainedModel",
           "CacheError", "CheckpointError", "ConfigError", "DeviceError", "FileAccessError", "InputError",
           "InputTypeError", "KVCache", "MissingFileError", "NonFiniteError", "QuestionAnsweringModelOutput",
           "SequenceClassifierOutputWithPast", "TokenClassifierOutput", "TokenizerError", "TraceFileError",
           "UsageError", "default_model_path", "detect_nonfinite", "trace", "__version__"]
