"""Applications built on the runtime library and the bridge: the command-line chat (``python -m apps.chat``) and the
end-to-end demo (``python -m apps.demo``, what ``make demo`` runs). The library ``a2llm_rt`` never imports them."""
