# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""Work split into parts that run side by side, each part on a thread of its own with one PyTorch intra-op thread.

Small or int8 kernels scale poorly over intra-op threads (MTCNN's convolutions, FBGEMM's int8 matmuls), while
one-thread parts side by side keep every core busy; a part on one intra-op thread also gives the same numbers on
every machine, whatever its core count.
"""

import threading


def run_on_one_thread_each(function, parts: list) -> list:
    """
    `[function(part) for part in parts]`, each part on a thread of its own (the first on the calling thread) with one
    PyTorch intra-op thread and the caller's grad and inference mode (both are per thread). The caller's intra-op
    thread count is restored afterwards; the first error raised by a part is raised again in the caller's thread.
    """
    import torch

    results, errors = [None] * len(parts), []
    previous_threads = torch.get_num_threads()
    grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()

    def run(index: int) -> None:
        torch.set_num_threads(1)
        try:
            with torch.inference_mode(inference), torch.set_grad_enabled(grad):
                results[index] = function(parts[index])
        except BaseException as error:  # raised again below, in the caller's thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=(index,), name="nanoemox-part", daemon=True)
               for index in range(1, len(parts))]  # fmt: skip
    for thread in threads:
        thread.start()
    try:
        run(0)
    finally:
        for thread in threads:
            thread.join()
        torch.set_num_threads(previous_threads)  # the caller's, and the default of threads started later
    if errors:
        raise errors[0]
    return results
