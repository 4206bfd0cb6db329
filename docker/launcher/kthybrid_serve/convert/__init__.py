"""`kthybrid-serve convert`: the checkpoint's MXFP4 routed experts to kt-kernel's AMX-INT4 layout.

Pure Python down to the point where work starts: reading the checkpoint's headers, planning
the layers, checking space and memory (`plan_conversion`). torch and kt-kernel are imported
only by `convert` itself, so the launcher imports on machines without them.
"""

from kthybrid_serve.convert.run import (
    ConversionPlan,
    ConvertRequest,
    ConvertResult,
    convert,
    plan_conversion,
)

__all__ = ["ConversionPlan", "ConvertRequest", "ConvertResult", "convert", "plan_conversion"]
