"""The frame pipeline, in pixels and without asyncio: frame in -> tensor -> mask -> composite -> frame out.

Modules in frame order: frames (in/out, resizing), segment (models), smoothing, refine, filters,
backgrounds, composite; config (what a session chose), timing, pipeline (the steps in order), workers.
"""
