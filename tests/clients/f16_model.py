"""Write an F16 copy of a quantized GGUF model: the source a real `create --quantize` starts from.

    python f16_model.py SRC DST

Every quantized tensor is dequantized (gguf-py, NumPy) and stored as F16; F32 tensors (norms)
stay F32; the metadata is copied, with general.file_type set to MOSTLY_F16. The result is a
model llama.cpp loads and answers with, written to a temp name beside DST and renamed when
complete (so two tests that make it at once both see a whole file).
"""

import os
import sys

import gguf
import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf import GGUFValueType as V


def main(src: str, dst: str) -> None:
    reader = gguf.GGUFReader(src)
    arch = reader.fields["general.architecture"].contents()
    partial = f"{dst}.{os.getpid()}.partial"
    writer = gguf.GGUFWriter(partial, arch)
    copy_fields(reader, writer, lambda key: key not in ("general.architecture", "general.file_type"))
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    for t in reader.tensors:
        if t.tensor_type == Q.F32:
            data = np.asarray(t.data, dtype=np.float32)
        else:
            data = gguf.quants.dequantize(t.data, t.tensor_type)
            if len(t.shape) > 1:
                data = data.astype(np.float16)
        # gguf-py keeps shapes in NumPy order (outermost first), the reverse of GGUF's.
        shape = tuple(reversed([int(d) for d in t.shape]))
        writer.add_tensor(t.name, data.reshape(shape))
    finish(writer, partial, dst)


def copy_fields(reader, writer, keep) -> None:
    """Copy the metadata of `reader` whose keys `keep` accepts into `writer`."""
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or not keep(key):
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == V.ARRAY else None
        writer.add_key_value(key, field.contents(), vtype, sub_type=sub)


def finish(writer, partial: str, dst: str) -> None:
    """Write the file out under its temp name, then rename it to `dst`."""
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(partial, dst)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
