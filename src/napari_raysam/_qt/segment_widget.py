"""Segment dock: pick an image and a SAM model, click or box cells, commit masks as labels.

Keys (viewer-wide while the dock is open): ``C`` commit the preview as new object(s),
``Shift-C`` clear prompts and preview, ``T`` flip the sign of the next point.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QWidget,
)

from napari_raysam._qt._common import (
    SAM_MODULES,
    DockLifetime,
    LayerCombo,
    ViewerHooks,
    detach_workers,
    parse_channels,
    preload,
    run_in_worker,
    same_layer,
    show_status,
)
from napari_raysam._qt._dock import scroll_body
from napari_raysam._qt.cluster_embed import ClusterEmbedRow
from napari_raysam._qt.gc_pauses import QuietCollector
from napari_raysam._qt.prompt_layers import PromptLayers
from napari_raysam.core.errors import RaysamError
from napari_raysam.core.images import ImagePolicy, check_plane, to_sam_input
from napari_raysam.core.sam import planes
from napari_raysam.core.sam import segment as seg
from napari_raysam.core.sam.embeddings import EmbeddingCache
from napari_raysam.core.sam.precision import PrecisionChoice, resolve_precision

DEFAULT_MODELS = ("tiny_cells", "tiny", "vit_b_lm", "vit_t_lm", "vit_b", "vit_l_lm")


class SegmentWidget(DockLifetime, QWidget):
    """The Segment dock. Its viewer key bindings (C, Shift-C, T), viewer events and prompt
    layers go when the dock is closed (:meth:`release`)."""

    progress = Signal(int, int)

    def __init__(self, napari_viewer, cache: EmbeddingCache | None = None):
        super().__init__()
        preload(SAM_MODULES)
        self.hooks = ViewerHooks()
        # what the dock loaded lives on: out of the full collections' walks from now on
        self.quiet_gc = QuietCollector(napari_viewer, self.hooks)
        self.viewer = napari_viewer
        self.cache = cache or EmbeddingCache()
        self.model = None
        self.precision: PrecisionChoice | None = None  # what the current embedding ran in
        self.embeddings: dict | None = None
        self.rgb: np.ndarray | None = None
        self._embedded_for: planes.EmbeddedFor | None = None
        self.worker = None
        self.busy = False  # a worker of this dock is running
        self._sizing = None  # the worker measuring the cache's size
        self.destroyed.connect(lambda *_: detach_workers([self._sizing]))
        self._size_again = False
        keys = {"c": self.commit, "Shift-C": self.clear, "t": self.toggle_sign}
        self.prompts = PromptLayers(napari_viewer, on_change=self.update_preview, keys=keys)
        self.prompts.create()

        self.image_combo = LayerCombo(napari_viewer, "Image", self.hooks)
        self.channels_edit = QLineEdit()
        self.channels_edit.setPlaceholderText("e.g. 2,0,3 (default: first 3)")
        self.model_combo = QComboBox()
        self.model_combo.setEditable(True)
        self.model_combo.addItems(DEFAULT_MODELS)
        self.refresh_models()
        self.model_label = QLabel()
        self.embed_button = QPushButton("Compute embedding")
        self.cluster_row = ClusterEmbedRow(self)
        self.auto_button = QPushButton("Automatic segmentation")
        self.commit_button = QPushButton("Commit (C)")
        self.clear_button = QPushButton("Clear (Shift-C)")
        self.sign_button = QPushButton("Next point: positive (T)")
        self.progress_bar = QProgressBar()
        self.status = QLabel("Pick an image and a model, then compute the embedding.")
        self.status.setWordWrap(True)
        self.cache_label = QLabel()
        self.clear_cache_button = QPushButton("Clear cache")

        form = QFormLayout()
        form.addRow("Image", self.image_combo)
        form.addRow("Channels", self.channels_edit)
        form.addRow("Model", self.model_combo)
        form.addRow(self.model_label)
        buttons = QHBoxLayout()
        for button in (self.commit_button, self.clear_button):
            buttons.addWidget(button)
        cache_row = QHBoxLayout()
        cache_row.addWidget(self.cache_label)
        cache_row.addWidget(self.clear_cache_button)
        layout = scroll_body(self, min_height=200)  # its form and Compute stay in view
        layout.addLayout(form)
        for widget in (self.embed_button, self.cluster_row, self.progress_bar,
                       self.sign_button):
            layout.addWidget(widget)
        layout.addLayout(buttons)
        layout.addWidget(self.auto_button)
        layout.addWidget(self.status)
        layout.addLayout(cache_row)
        layout.addStretch()

        self.embed_button.clicked.connect(lambda: self.compute_embedding())
        self.auto_button.clicked.connect(lambda: self.run_automatic())
        self.commit_button.clicked.connect(lambda: self.commit())
        self.clear_button.clicked.connect(lambda: self.clear())
        self.sign_button.clicked.connect(lambda: self.toggle_sign())
        self.clear_cache_button.clicked.connect(self.clear_cache)
        self.progress.connect(self._on_progress)
        self.model_combo.activated.connect(lambda _i: self._on_model_change())
        self.model_combo.lineEdit().editingFinished.connect(self._on_model_change)
        self.model_combo.currentTextChanged.connect(lambda _t: self.update_model_label())
        self.image_combo.currentTextChanged.connect(lambda _t: self._on_image_change())
        self.hooks.connect(napari_viewer.dims.events.current_step, self._on_plane_change)
        for key, method in keys.items():  # the prompt layers bind them too (layer keys win)
            self.hooks.bind_key(napari_viewer, key, lambda _v, m=method: m())
        self.update_cache_label()
        self.update_model_label()

    def release(self) -> None:
        """Unbind the keys, disconnect from the viewer and take the prompt layers away."""
        self.hooks.release()
        self.prompts.release_ids()
        self.prompts.remove()
        detach_workers([self._sizing])  # a cache walk ending later must not touch the dock
        detach_workers([*self.cluster_row.workers, self.cluster_row.follower])

    # --- state --------------------------------------------------------------------------

    @property
    def image_layer(self):
        return self.image_combo.current_layer()

    def _policy_and_plane(self):
        """The current 2D(+channels) plane of the chosen image and its channel policy."""
        layer = self.image_layer
        if layer is None:
            raise RaysamError("No image layer: open an image (or File > Open Sample) first.")
        planes.check_view(self.viewer.dims.ndisplay, self.viewer.dims.order)
        plane = planes.select_plane(layer.ndim, layer.data.ndim, self.viewer.dims.current_step,
                                    layer.metadata.get("raysam_channel_axis"))
        policy = ImagePolicy(channel_axis=plane.channel_axis, channels=parse_channels(
            self.channels_edit.text()))
        return layer, plane.plane_index, np.asarray(layer.data[plane.index]), policy

    # --- model and embeddings -----------------------------------------------------------

    def refresh_models(self) -> None:
        """Offer fine-tuned models fetched from runs (``run:NAME``) after the defaults (called
        when the dock opens and by the Train dock when it fetches a model)."""
        from napari_raysam.core.model_store import list_registered_models

        known = {self.model_combo.itemText(i) for i in range(self.model_combo.count())}
        for model in list_registered_models():
            if f"run:{model.name}" not in known:
                self.model_combo.addItem(f"run:{model.name}")

    def model_spec(self) -> str:
        """The model spec chosen in the dock (what the next embedding uses)."""
        return self.model_combo.currentText()

    def use_model(self, spec: str) -> None:
        """Make ``spec`` (e.g. ``run:NAME`` of a fetched run) the dock's model: listed, chosen,
        and the current plane re-embedded with it if it had an embedding."""
        self.refresh_models()
        if self.model_combo.findText(spec) < 0:
            self.model_combo.addItem(spec)
        self.model_combo.setCurrentText(spec)
        self._on_model_change()

    def compute_embedding(self):
        """Compute (or fetch from the cache) the embedding of the current plane in a worker."""
        try:
            layer, plane_index, plane, policy = self._policy_and_plane()
            check_plane(plane, policy)
        except RaysamError as exc:
            show_status(self.status, str(exc), error=True)
            return None
        spec = self.model_combo.currentText()

        def work():
            from napari_raysam.core.sam.models import load_model

            model = self.model
            if model is None or model.spec != spec:
                model = load_model(spec)
            sam_input = to_sam_input(plane, model.image_policy(policy))  # as the model learned
            choice = resolve_precision("auto", model.device)
            embeddings = self.cache.get_or_compute(model, sam_input, precision=choice.precision,
                                                   progress=self.progress.emit)
            rgb = sam_input.rgb
            _ = model.encoder_fingerprint  # hash the weights here, not on the Qt thread
            return model, embeddings, rgb, choice

        def done(result):
            rgb = result[2]
            self.model, self.precision = result[0], result[3]
            self.update_model_label()
            self.update_cache_label()
            if not same_layer(layer, self.image_layer):  # another image was chosen meanwhile
                return self._drop_embedding(layer)
            self.embeddings, self.rgb = result[1], rgb
            self._embedded_for = planes.EmbeddedFor(layer, plane_index,
                                                    self.model.encoder_fingerprint)
            self.prompts.ensure(layer, rgb.shape[:2])
            show_status(self.status, planes.ready_text(layer.name, plane_index))
            self.update_preview()

        return self._start(work, (), done, "Computing the image embedding...")

    def _on_model_change(self):
        """A new model: re-embed the current plane (free from the cache if the encoder is equal)."""
        if self._embedded_for is not None and (
            self.model is None or self.model.spec != self.model_combo.currentText()
        ):
            self.compute_embedding()

    def update_model_label(self):
        spec = None if self.model is None else self.model.spec
        precision = None if self.precision is None else self.precision.label
        self.model_label.setText(planes.model_text(spec, self.model_combo.currentText(),
                                                   precision))

    def _drop_embedding(self, old_layer) -> None:
        """Another image is chosen: forget ``old_layer``'s embedding, prompts and preview (they
        must not segment the new image, nor commit into the old one's objects); say so."""
        self.embeddings, self.rgb, self._embedded_for = None, None, None
        self.prompts.clear()
        new = self.image_layer
        show_status(self.status, planes.image_changed_text(old_layer.name,
                                                           None if new is None else new.name))

    def _on_image_change(self):
        if self._embedded_for is not None and not same_layer(self._embedded_for.layer,
                                                             self.image_layer):
            self._drop_embedding(self._embedded_for.layer)

    def _on_plane_change(self, _event=None):
        if self._embedded_for is None or self.busy:
            return  # a running worker re-checks the plane when it finishes
        if not same_layer(self._embedded_for.layer, self.image_layer):
            return self._on_image_change()
        try:
            _, plane_index, _, _ = self._policy_and_plane()
        except RaysamError:
            return
        if plane_index != self._embedded_for.plane_index:
            self.embeddings = None
            self.prompts.clear()
            self.compute_embedding()

    # --- prompts, preview, commit -------------------------------------------------------

    def masks_from_prompts(self) -> list[np.ndarray]:
        """Masks for the current prompts: one per box (points refine a single box)."""
        if self.embeddings is None or self.model is None:
            return []
        points, labels = self.prompts.points()
        boxes = self.prompts.boxes()
        if len(boxes) > 1:
            return seg.segment_boxes(self.model, self.embeddings, boxes)
        if len(boxes) == 0 and len(points) == 0:
            return []
        box = boxes[0] if len(boxes) else None
        return [seg.segment(self.model, self.embeddings, points, labels, box)]

    def update_preview(self):
        try:
            masks = self.masks_from_prompts()
        except RaysamError as exc:
            show_status(self.status, str(exc), error=True)
            masks = []
        except (RuntimeError, ValueError) as exc:  # e.g. prompts spread over several tiles
            show_status(self.status, f"No mask for these prompts: {exc}. Keep the prompts of "
                        "one object close together, or clear them (Shift-C).", error=True)
            masks = []
        self.prompts.show_preview(masks)

    def commit(self) -> list[int]:
        """Write each preview mask as a new object id into the target labels (undoable)."""
        masks = self.prompts.preview_masks()
        if not masks or self.embeddings is None:
            message = planes.nothing_to_commit(self.embeddings is not None, self.busy)
            show_status(self.status, message, error=True)
            return []
        layer, plane_index, _ = self._embedded_for
        target, ids = self.prompts.commit(masks, layer, plane_index)
        show_status(self.status, f"Committed object(s) {ids} to '{target.name}'.")
        return ids

    def clear(self):
        self.prompts.clear()

    def toggle_sign(self) -> int:
        sign = self.prompts.toggle_sign()
        self.sign_button.setText(f"Next point: {'positive' if sign else 'negative'} (T)")
        return sign

    # --- automatic segmentation ---------------------------------------------------------

    def run_automatic(self):
        """Automatic instance segmentation of the current plane into a Labels layer."""
        if self.embeddings is None or self.rgb is None:
            show_status(self.status, "Compute the embedding first.", error=True)
            return None
        model, rgb, embeddings = self.model, self.rgb, self.embeddings
        image_layer = self._embedded_for[0]
        layer_name = f"{image_layer.name} automatic"

        def done(labels):
            self.prompts.show_labels(labels, layer_name, image_layer)
            show_status(self.status, f"Automatic segmentation: {int(labels.max())} objects.")

        return self._start(seg.automatic, (model, rgb, embeddings, self.progress.emit), done,
                           "Automatic segmentation...")

    # --- plumbing -----------------------------------------------------------------------

    def _start(self, func, args, done, message):
        if self.busy:
            show_status(self.status, "Still working on the last request; try again when done.")
            return None
        show_status(self.status, message)
        self.progress_bar.setRange(0, 0)
        self.busy = True
        self.worker = run_in_worker(func, args, done, self._on_error, self._on_finished)
        return self.worker

    def _on_error(self, exc):
        show_status(self.status, str(exc), error=True)

    def _on_finished(self):
        self.busy = False
        self._on_plane_change()
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(1)

    def _on_progress(self, done: int, total: int):
        self.progress_bar.setRange(0, max(total, 1))
        self.progress_bar.setValue(done)

    def update_cache_label(self):
        """Show the cache's size, measured in a worker: it walks every file of the cache."""
        if self._sizing is not None:  # one walk at a time; measure again when it is done
            self._size_again = True
            return
        self._size_again = False
        self._sizing = run_in_worker(self.cache.size_bytes, (), self._show_cache_size,
                                     self._on_error, self._on_sized)

    def _show_cache_size(self, size: int) -> None:
        try:
            self.cache_label.setText(f"Embedding cache: {size / 1e6:.1f} MB")
        except RuntimeError:  # the dock was deleted while the walk ran
            pass

    def _on_sized(self) -> None:
        self._sizing = None
        if self._size_again:
            self.update_cache_label()

    def clear_cache(self):
        """Delete the cached embeddings in a worker; returns the worker."""
        def done(freed: int) -> None:
            show_status(self.status, f"Cleared {freed / 1e6:.1f} MB of cached embeddings.")
            self.update_cache_label()

        self.clear_cache_button.setEnabled(False)
        return run_in_worker(self.cache.clear, (), done, self._on_error,
                             lambda: self.clear_cache_button.setEnabled(True))
