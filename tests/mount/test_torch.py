"""PyTorch through the mount: what deployment and training nodes do with it.

Each object is saved to a local file, uploaded into the store's run folder, registered,
and loaded both through the mount (plain paths: runs/..., models/<name>/<version>/...,
models/<name>/latest/...) and from the local file; the two must be equal.
"""
import pytest

import torch  # Debian's python3-torch: the tests run with /usr/bin/python3



def equal(a, b):
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b))
    return a == b


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(256, 512)
        self.fc2 = torch.nn.Linear(512, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


@pytest.fixture
def model_store(store, tmp_path):
    torch.manual_seed(7)
    net = Net()
    out = tmp_path / "saved"
    out.mkdir()
    torch.save(net.state_dict(), out / "model.pth")
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.randn(4, 256)).sum().backward()
    opt.step()
    torch.save({"epoch": 7, "model": net.state_dict(), "optimizer": opt.state_dict(),
                "loss": 0.25, "big": torch.randn(3_000_000)}, out / "checkpoint.pt")
    torch.jit.script(net).save(str(out / "scripted.pt"))
    for f in out.iterdir():
        store.put(f"runs/pytorch-birds/run-42/outputs/{f.name}", f.read_bytes())
    assert store.register("pt-dnn", "runs/pytorch-birds/run-42/outputs/",
                          "--alias", "production") == 1
    store.out = out
    return store


def test_torch_load_state_dict(model_store, make_mount):
    m = make_mount(model_store)
    want = torch.load(model_store.out / "model.pth")
    for rel in ["models/pt-dnn/production/model.pth", "models/pt-dnn/1/model.pth",
                "models/pt-dnn/latest/model.pth",
                "runs/pytorch-birds/run-42/outputs/model.pth"]:
        got = torch.load(m / rel)
        assert equal(got, want), rel
    net = Net()
    net.load_state_dict(torch.load(m / "models/pt-dnn/production/model.pth"))


def test_torch_load_checkpoint_dict(model_store, make_mount):
    m = make_mount(model_store, "--chunk-size", "1M")
    want = torch.load(model_store.out / "checkpoint.pt")
    got = torch.load(m / "models/pt-dnn/1/checkpoint.pt")
    assert got["epoch"] == 7 and got["loss"] == 0.25
    assert equal(got, want)
    # again, warm from the cache, with mmap-style random access of the zip
    got = torch.load(m / "models/pt-dnn/latest/checkpoint.pt", map_location="cpu")
    assert equal(got, want)


def test_torch_jit_load_scripted_model(model_store, make_mount):
    m = make_mount(model_store)
    want = torch.jit.load(str(model_store.out / "scripted.pt"))
    got = torch.jit.load(str(m / "models/pt-dnn/production/scripted.pt"))
    x = torch.randn(5, 256)
    assert torch.equal(got(x), want(x))
    assert equal(dict(got.state_dict()), dict(want.state_dict()))


def test_fine_tune_from_registered_model_and_register_result(model_store, make_mount,
                                                             tmp_path):
    """A training node resumes from a registered model and its run gets registered."""
    m = make_mount(model_store, "--ttl", "1")
    net = Net()
    net.load_state_dict(torch.load(m / "models/pt-dnn/production/model.pth"))
    with torch.no_grad():
        net.fc2.bias += 1
    torch.save(net.state_dict(), tmp_path / "tuned.pth")
    model_store.put("runs/pytorch-birds/run-43/outputs/model.pth",
                    (tmp_path / "tuned.pth").read_bytes())
    assert model_store.register("pt-dnn", "runs/pytorch-birds/run-43/outputs/") == 2
    model_store.alias("pt-dnn", "staging", "2")
    from conftest import wait_for
    import os
    wait_for(lambda: os.path.lexists(m / "models/pt-dnn/staging"), 10, "staging alias")
    assert equal(torch.load(m / "models/pt-dnn/staging/model.pth"), net.state_dict())
