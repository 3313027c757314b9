"""Models: loading and fingerprints (load), the precision policy (precision), encoding (encoder) and
two-tower routing (towers), one job per module; the public names are re-exported here."""

from textcl.hub import BUNDLED_NAMES, check_model_folder, resolve_model_path
from textcl.models.encoder import CACHE_VERSION, Encoder, MemoEncoder, adopt_rule, model_rule
from textcl.models.load import (
    load_configured_model,
    load_model,
    model_fingerprint,
    module_stack,
    tokenizer_text,
    weights_version,
)
from textcl.models.precision import cpu_has_bf16, encoder_precision, resolve_precision, scoring_precision
from textcl.models.towers import ROUTES, RoutedEncoder, encoder_for, make_encoder, router_model, split_towers

__all__ = ['BUNDLED_NAMES', 'check_model_folder', 'resolve_model_path', 'load_model', 'model_fingerprint', 'module_stack', 'tokenizer_text', 'weights_version', 'load_configured_model', 'cpu_has_bf16', 'resolve_precision', 'encoder_precision', 'scoring_precision', 'CACHE_VERSION', 'Encoder', 'MemoEncoder', 'model_rule', 'adopt_rule', 'ROUTES', 'split_towers', 'router_model', 'RoutedEncoder', 'encoder_for', 'make_encoder']
