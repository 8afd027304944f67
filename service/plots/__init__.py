"""PNG pictures of results, one function per picture, each taking plain data, returning bytes.

matplotlib is imported inside the functions (Agg canvas, object API, never pyplot), so the
gateway starts fast and renders from request threads without shared global figure state.
Nothing here imports torch.
"""
