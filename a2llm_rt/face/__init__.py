"""Face motion at run time: the FLAME58 / ARKIT52 / LIVELINK61 layouts, the FLAME layer, the FLAME -> ARKit map, clip
file formats, Live Link packets, the metric math, idle life and emotions. Tools that are not needed at inference
(plots, renderer, glTF, converters, fitting, the metrics command line) live in :mod:`a2llm_rt.face_tools`."""
