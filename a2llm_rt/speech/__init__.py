"""Native token2wav for Step-Audio-2's audio codes: the flow model (codes -> 50 Hz mel) and HiFT (mel -> 24 kHz).

Same architecture and parameter names as Step-Audio-2-mini's ``token2wav/`` folder (``flow.pt`` + ``flow.yaml``,
``hift.pt``), so the released state dicts load; no upstream code is used or needed at run time.

- :mod:`.config`: :class:`FlowConfig`, :class:`HiFTConfig` (real and tiny presets);
- :mod:`.conformer`: the token encoder (upsampling conformer with pre-lookahead);
- :mod:`.dit`: the flow-matching estimator (causal DiT);
- :mod:`.flow`: token embedding + encoder + conditional flow matching (Euler, classifier-free guidance);
- :mod:`.hift`: the HiFT vocoder (F0 predictor, neural source filter, iSTFT);
- :mod:`.checkpoint`: safe loading of ``flow.yaml`` / ``flow.pt`` / ``hift.pt`` and the safetensors converter;
- :mod:`.token2wav`: streaming driver (per-session typed state, sessions of any lengths batched in one call);
- :mod:`.voice`, :mod:`.make_voice`: voices (prompt codes, speaker embedding, prompt mel);
- :mod:`.vocoder`: the engine's :class:`~a2llm_rt.engine.vocoder.Vocoder` (one batched call for all streams);
- :mod:`.onnx_runtime`, :mod:`.trt_runtime`, :mod:`.backend`: the exported graphs through onnxruntime or TensorRT,
  and the choice between them and torch.
"""
