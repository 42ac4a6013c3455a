"""File formats users already have: our ``.npz``, Live Link Face CSV, Audio2Face-style JSON and LLV ``.gesichter``.

Each module reads a file into a :class:`~a2llm_rt.face.clip.MotionClip` and writes one back (atomically).
Use :func:`a2llm_rt.face.io.load_clip` / :func:`a2llm_rt.face.io.save_clip`, which dispatch by suffix.
"""
