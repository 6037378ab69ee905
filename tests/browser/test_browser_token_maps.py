"""Where a transformer's neurons fire, checked in a real headless Chromium against a
live tensorboard: a tiny ViT's 16 patch tokens (with or without a class token) are
drawn as the 4 x 4 grid they are, cell for cell the route's maps; a layer of 1 x 1
maps paints no image and says it has no spatial extent; tokens that are no square grid
are a strip, said."""

from __future__ import annotations

import requests
import torch
from browser_tab import drawn_maps, open_tab, running_browser, skip_without_chromium
from tensorboard_process import running_tensorboard
from tiny_model import NUM_CLASSES, TinyNet, loader, random_set, trainer
from torch import nn

from deephys_lightning import DeephysCallback

skip_without_chromium()

WIDTH = 6  # the tokens' channels: the recorded neurons


class TinyViT(TinyNet):
    """A ViT-like net on 8 x 8 images: a 2 x 2 patch embedding gives ``patches``
    (B, 16, 6), a class token before them ``tokens`` (B, 17, 6); ``pooled`` is the
    embedding pooled to (B, 6, 1, 1), ``strip`` the first 7 tokens (B, 7, 6)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, WIDTH, kernel_size=2, stride=2)
        nn.init.uniform_(self.embed.weight, 0.0, 0.5)  # every neuron fires: its maps differ
        nn.init.zeros_(self.embed.bias)
        self.cls = nn.Parameter(torch.randn(1, 1, WIDTH))
        self.patches = nn.Identity()
        self.tokens = nn.Identity()
        self.pooled = nn.AdaptiveAvgPool2d(1)
        self.strip = nn.Identity()
        self.classify = nn.Linear(WIDTH, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grid = self.embed(x)  # (B, 6, 4, 4)
        patches = self.patches(grid.flatten(2).transpose(1, 2))  # (B, 16, 6), row by row
        tokens = self.tokens(torch.cat([self.cls.expand(len(x), -1, -1), patches], dim=1))
        pooled = self.pooled(grid).flatten(1)
        strip = self.strip(tokens[:, :7])
        return self.classify(tokens[:, 0] + pooled + strip.mean(dim=1))


def _run(base) -> str:
    return requests.get(f"{base}/data/plugin/deephys/runs", timeout=10).json()["runs"][0]["run"]


def _neuron(base, run, layer, neuron=0):
    body = requests.get(
        f"{base}/data/plugin/deephys/neuron",
        params={"run": run, "layer": layer, "neuron": neuron},
        timeout=30,
    )
    assert body.status_code == 200, body.text
    return body.json()


def test_a_vits_tokens_are_drawn_where_they_are(tmp_path):
    torch.manual_seed(0)
    layers = ["patches", "tokens", "pooled", "strip"]
    t = trainer(tmp_path, [DeephysCallback(layers=layers)], max_epochs=1)
    data = {"ind": loader(random_set(12, 1)), "ood": loader(random_set(12, 2))}
    t.fit(TinyViT(), loader(random_set(8, 0)), val_dataloaders=data)
    with running_browser() as browser, running_tensorboard(tmp_path, load_fast=False) as base:
        run = _run(base)
        url = f"{base}/#deephys&p.deephys.run={run}&p.deephys.layer=patches&p.deephys.maps=1"
        page, frame, errors = open_tab(browser, base, url=url, ready=".neuron-view figure svg.map")
        for layer in ("patches", "tokens"):  # 16 tokens, and a class token before them
            if layer != "patches":
                frame.locator("#layer-select").select_option(layer)
                frame.locator(".neuron-view svg.map >> nth=0").wait_for()
            body = _neuron(base, run, layer)
            images = [image for d in body["datasets"] for image in d["images"]]
            assert images and all(image["map"]["shape"] == [4, 4] for image in images)
            for _, cells in drawn_maps(frame, body):
                # cell i is token i (after the class token): row i // 4, column i % 4
                assert [(x, y) for x, y, _ in cells] == [(i % 4, i // 4) for i in range(16)]
            assert frame.locator(".neuron-view .map-note").count() == 0  # a grid: no note

        frame.locator("#layer-select").select_option("pooled")  # 1 x 1: no map, said
        note = frame.locator(".neuron-view .map-note", has_text="no spatial extent")
        note.wait_for()
        assert "this layer has no spatial extent at this resolution" in note.text_content()
        body = _neuron(base, run, "pooled")
        assert all(
            image["map"]["shape"] == [1, 1] for d in body["datasets"] for image in d["images"]
        )
        assert frame.locator(".neuron-view figure").count() > 0
        assert frame.locator(".neuron-view figure svg.map").count() == 0
        frame.locator("#maps-input").uncheck()  # the note goes with the maps
        assert note.is_hidden()
        frame.locator("#maps-input").check()
        note.wait_for()

        frame.locator("#layer-select").select_option("strip")  # 7 tokens: a strip, said
        note = frame.locator(".neuron-view .map-note", has_text="not a square grid")
        note.wait_for()
        assert "this layer's 7 tokens are not a square grid" in note.text_content()
        assert frame.locator(".neuron-view .map-note").count() == 1
        overlay = frame.locator(".neuron-view figure svg.map").first
        assert overlay.get_attribute("data-shape") == "1x7"
        assert errors == []
        page.close()
