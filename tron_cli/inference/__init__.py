"""Answering with a trained model: catalogue scoring in chunks (`scoring`), the transition prior (`transitions`),
the scorer that ranks items (network plus prior, `scorer`), item indexes (`index`) and retrieval through them
(`retrieval`), session input (`session_input`), raw ids (`catalogue`) and a loaded model ready to answer
(`predictor`). Used by validation, `tron evaluate`, `tron recommend`, `tron export` and the server."""
