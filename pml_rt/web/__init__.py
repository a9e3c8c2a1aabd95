"""The browser annotator behind ``pml-rt annotate VIDEO``.

- :mod:`pml_rt.web.state`: :class:`~pml_rt.web.state.Annotator`, the one-user app logic
  (embedding in the background, the interactive session, objects, undo, export); no web
  library needed.
- :mod:`pml_rt.web.app`: :func:`~pml_rt.web.app.create_app`, the Starlette routes with
  their input checks, size limits and loopback-only defaults.
- :mod:`pml_rt.web.server`: ``cli_main(args)`` for the CLI and a thread runner for tests.
- ``static/``: the page (plain HTML, CSS and JavaScript; no build step).

Starlette and uvicorn come with the ``web`` extra: ``pip install 'pml-rt[web]'``.
"""
