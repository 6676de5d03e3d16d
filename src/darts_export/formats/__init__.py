"""Pure encoders: arrays or frames in, bytes (or one staged local file) out.

No module here knows where its bytes go, and no format module imports another: what they
share (the GDAL environment and its warnings policy) lives in the private ``_gdal`` module.
"""
