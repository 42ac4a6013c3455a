"""Face tools, not needed at inference: plots, the software renderer, the ARKit glTF writer, format and FLAME
converters, fitting of the FLAME -> ARKit map and the metrics command line. The runtime maps they build on live in
:mod:`a2llm_rt.face`; nothing in :mod:`a2llm_rt.face` imports this package."""
