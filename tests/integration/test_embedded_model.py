import time

from progra_core.llm import ChatRequest, Gateway
from progra_core.llm.embedded import EMBEDDED_NAME, ensure_embedded_model


def test_provisioned_once_and_loadable(embedded_model):
    assert embedded_model.name == EMBEDDED_NAME
    stamp = (embedded_model / "model.safetensors").stat().st_mtime
    t0 = time.perf_counter()
    again = ensure_embedded_model(embedded_model.parent)
    assert again == embedded_model and time.perf_counter() - t0 < 1.0
    assert (embedded_model / "model.safetensors").stat().st_mtime == stamp  # not reconverted
    import json

    cfg = json.loads((embedded_model / "config.json").read_text())
    assert cfg["model_type"] == "llama" and "quantization_config" not in cfg


def test_local_smollm2_answers_sensibly(embedded_model):
    g = Gateway(None, models_root=embedded_model.parent)
    (r,) = g.batch([ChatRequest([{"role": "user", "content": "What is the capital of France?"}], "local/smollm2", max_tokens=12)])
    assert r.ok and "Paris" in r.text
