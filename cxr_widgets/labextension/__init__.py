"""The prebuilt JupyterLab extension (``static_build/``, made from ``labextension/`` by npm
while packaging) ships in the wheel under ``share/jupyter/labextensions/``."""
