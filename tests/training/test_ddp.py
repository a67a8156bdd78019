"""Lightning's DDP strategy on two CPU processes (gloo) trains one model in step."""

import subprocess
import sys

import torch

SCRIPT = '''
import sys

import torch

import pipeline  # noqa: F401
import lightning as L
from torch.utils.data import DataLoader

from pipeline.config import OptimizerConfig
from pipeline.models.registry import create_model
from pipeline.training.segmenter import SegmenterModule


def main(out: str) -> None:
    L.seed_everything(0, workers=True)
    images = torch.rand(16, 3, 64, 64)
    masks = (torch.rand(16, 1, 64, 64) > 0.7).float()
    data = [{"occluded_image": images[i], "occluder_mask": masks[i], "label_map": (masks[i, 0] * 2).long()}
            for i in range(16)]
    net = create_model("sa-unet", width=4, max_channels=16)
    module = SegmenterModule(net, OptimizerConfig("adam", 1e-3), {"bce": 1.0, "dice": 1.0})
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0)
    trainer.fit(module, DataLoader(data, batch_size=4))
    torch.save({"world_size": trainer.world_size, "backend": trainer.strategy._process_group_backend,
                "steps": trainer.global_step, "parameters": [p.detach() for p in net.parameters()]},
               f"{out}/rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    main(sys.argv[1])
'''


def test_ddp_on_two_cpu_processes_keeps_replicas_identical(tmp_path):
    script = tmp_path / "train_ddp.py"
    script.write_text(SCRIPT)
    result = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=600,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in (0, 1)]
    assert all(r["world_size"] == 2 and r["backend"] == "gloo" for r in ranks)
    assert all(r["steps"] == 2 for r in ranks)  # 16 samples, 8 per process, batches of 4
    for a, b in zip(ranks[0]["parameters"], ranks[1]["parameters"]):
        torch.testing.assert_close(a, b)
