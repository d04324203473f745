"""The prompt layers the Segment dock draws on: points (+/-), boxes, a preview, a target."""

from __future__ import annotations

import weakref
from collections.abc import Callable

import numpy as np

from napari_raysam._qt._common import unwrap
from napari_raysam.core.sam import planes

POINTS, BOXES, PREVIEW = "raysam points", "raysam boxes", "raysam preview"
POSITIVE, NEGATIVE = "limegreen", "red"


class PromptLayers:
    """Creates and reads the prompt layers for one image layer."""

    def __init__(self, viewer, on_change: Callable[[], None],
                 keys: dict[str, Callable[[], object]] | None = None):
        self.viewer = viewer
        self.on_change = on_change
        self.keys = keys or {}
        self.sign = 1
        self._muted = False
        self._placed = False
        self._ids: dict[int, tuple] = {}  # id(objects layer) -> (weakref, ObjectIds, callback)

    def _layer(self, name):
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def create(self) -> None:
        """Add the (empty) prompt layers now, when the dock opens, as micro-sam's annotator does.

        napari/vispy take ~0.3 s of the GUI thread per new layer (visuals, overlays, shader
        compilation at the first paint); adding all three when the first embedding arrived
        froze the viewer for ~1 s (``benchmarks/responsiveness.py``). Opening the dock already
        blocks for its imports; :meth:`ensure` then only resizes and moves these layers.
        Layers of the same names left by an earlier dock are replaced: their events would
        still call that dock.
        """
        self.remove()
        self._add_missing((1, 1), None, None)

    def remove(self) -> None:
        """Take the prompt layers out of the viewer (with them, their key bindings and the
        event callbacks into the dock)."""
        for name in (POINTS, BOXES, PREVIEW):
            if self._layer(name) is not None:
                self.viewer.layers.remove(name)

    def ensure(self, image_layer, shape: tuple[int, int]) -> None:
        """Fit the prompt layers (2D) to the image's last two axes, above the image; any the
        user deleted are added again."""
        scale, translate = image_layer.scale[-2:], image_layer.translate[-2:]
        self._add_missing(shape, scale, translate)
        preview = self._layer(PREVIEW)
        if preview.data.shape != tuple(shape):
            preview.data = np.zeros(shape, np.uint32)
        layers = [self._layer(name) for name in (PREVIEW, BOXES, POINTS)]
        for layer in layers:
            if not np.array_equal(layer.scale, scale):
                layer.scale = scale
            if not np.array_equal(layer.translate, translate):
                layer.translate = translate
        stack = self.viewer.layers
        if image_layer in stack and min(map(stack.index, layers)) < stack.index(image_layer):
            for layer in layers:  # keep their order, on top of the image
                stack.move(stack.index(layer), len(stack))
        points = layers[-1]
        if not self._placed:
            points.mode = "add"
            self._placed = True
        stack.selection.active = points

    def _add_missing(self, shape, scale, translate) -> None:
        where = {} if scale is None else {"scale": scale, "translate": translate}
        if self._layer(PREVIEW) is None:
            self.viewer.add_labels(np.zeros(shape, np.uint32), name=PREVIEW, opacity=0.5,
                                   **where)
        if self._layer(BOXES) is None:
            boxes = self.viewer.add_shapes(name=BOXES, ndim=2, edge_color="yellow",
                                           face_color="transparent", edge_width=2, **where)
            boxes.events.data.connect(self._changed)
            self._bind_keys(boxes)
        if self._layer(POINTS) is None:
            points = self.viewer.add_points(ndim=2, name=POINTS, size=8,
                                            features={"sign": np.zeros(0, int)}, **where)
            points.feature_defaults["sign"] = self.sign
            points.events.data.connect(self._changed)
            self._bind_keys(points)
            self._placed = False  # a new points layer starts in add mode once placed

    def _bind_keys(self, layer) -> None:
        # a layer's own key bindings take precedence over the viewer's while it is active
        for key, method in self.keys.items():
            layer.bind_key(key, lambda _layer, m=method: m(), overwrite=True)

    def _changed(self, _event=None):
        if self._muted:
            return
        points = self._layer(POINTS)
        if points is not None and len(points.data):
            colours = np.where(points.features["sign"].to_numpy() == 1, POSITIVE, NEGATIVE)
            self._muted = True
            try:
                points.face_color = list(colours)
            finally:
                self._muted = False
        self.on_change()

    def points(self) -> tuple[np.ndarray, np.ndarray]:
        points = self._layer(POINTS)
        if points is None or len(points.data) == 0:
            return np.zeros((0, 2)), np.zeros(0, int)
        return np.asarray(points.data)[:, -2:], points.features["sign"].to_numpy().astype(int)

    def boxes(self) -> list[np.ndarray]:
        """Boxes as (row0, col0, row1, col1) from the rectangles drawn."""
        shapes = self._layer(BOXES)
        if shapes is None:
            return []
        boxes = []
        for vertices in shapes.data:
            vertices = np.asarray(vertices)[:, -2:]
            boxes.append(np.concatenate([vertices.min(axis=0), vertices.max(axis=0)]))
        return boxes

    def add_point(self, row: float, col: float, sign: int | None = None) -> None:
        """Add a prompt point (what a click in add mode does)."""
        points = self._layer(POINTS)
        points.feature_defaults["sign"] = self.sign if sign is None else sign
        points.add([[row, col]])
        points.feature_defaults["sign"] = self.sign

    def add_box(self, row0: float, col0: float, row1: float, col1: float) -> None:
        self._layer(BOXES).add_rectangles(np.array([[row0, col0], [row1, col1]]))

    def toggle_sign(self) -> int:
        self.sign = 0 if self.sign == 1 else 1
        points = self._layer(POINTS)
        if points is not None:
            points.feature_defaults["sign"] = self.sign
            points.current_face_color = POSITIVE if self.sign else NEGATIVE
        return self.sign

    def show_preview(self, masks: list[np.ndarray]) -> None:
        preview = self._layer(PREVIEW)
        if preview is None:
            return
        data = np.zeros(preview.data.shape, np.uint32)
        for i, mask in enumerate(masks, start=1):
            data[mask & (data == 0)] = i
        preview.data = data

    def preview_masks(self) -> list[np.ndarray]:
        preview = self._layer(PREVIEW)
        if preview is None:
            return []
        data = np.asarray(preview.data)
        return [data == i for i in range(1, int(data.max()) + 1) if (data == i).any()]

    def target_labels(self, image_layer):
        """The Labels layer commits go to ('<image> objects'), created to match the image."""
        name = f"{image_layer.name} objects"
        if name not in self.viewer.layers:
            shape, scale, translate = objects_layout(image_layer)
            self.viewer.add_labels(np.zeros(shape, np.uint32), name=name, scale=scale,
                                   translate=translate)
        return self.viewer.layers[name]

    def commit(self, masks: list[np.ndarray], image_layer, plane_index: tuple[int, ...]):
        """Write each mask as a new object id into the image's objects layer (undoable);
        clear the prompts. Returns that layer and the ids written."""
        target = self.target_labels(image_layer)
        counter = self._object_ids(target)
        # napari's undo history keeps each commit's indices (its last 100 commits): int16
        # instead of numpy's int64 makes an entry 8 instead of 20 bytes per pixel
        small = np.int16 if max(target.data.shape) <= np.iinfo(np.int16).max else np.int32
        ids = []
        for mask in masks:
            rows, cols = (axis.astype(small) for axis in np.nonzero(mask))
            if rows.size == 0:
                continue
            new_id = counter.next_id(target.data)
            lead = tuple(np.full(rows.size, i, small)
                         for i in self.lead_index(target, image_layer, plane_index))
            target.data_setitem((*lead, rows, cols), new_id)
            counter.saw(new_id)
            ids.append(new_id)
        self.clear()
        self.select()
        return target, ids

    def _object_ids(self, target) -> planes.ObjectIds:
        """The id counter of ``target``, told about every brush stroke on it."""
        layer = unwrap(target)
        known = self._ids.get(id(layer))
        if known is not None and known[0]() is layer:
            return known[1]
        counter = planes.ObjectIds()

        def painted(event, counter=counter):  # napari's paint event: the history item written
            for atom in event.value:  # a masked atom (a NamedTuple) or (indices, old, new)
                counter.saw(atom.new_value if hasattr(atom, "new_value") else atom[2])

        layer.events.paint.connect(painted)
        self._ids[id(layer)] = (weakref.ref(layer), counter, painted)
        return counter

    def release_ids(self) -> None:
        """Stop listening to the objects layers' paint events (the dock is closing)."""
        for ref, _counter, painted in self._ids.values():
            layer = ref()
            if layer is not None:
                try:
                    layer.events.paint.disconnect(painted)
                except (RuntimeError, TypeError, ValueError):
                    pass
        self._ids.clear()

    def show_labels(self, labels: np.ndarray, name: str, image_layer) -> None:
        """Show a 2D labels image of ``image_layer`` (automatic segmentation) as ``name``."""
        if name in self.viewer.layers:
            self.viewer.layers[name].data = labels
        else:
            self.viewer.add_labels(labels, name=name, scale=image_layer.scale[-2:],
                                   translate=image_layer.translate[-2:])
        self.select()

    def select(self) -> None:
        """Keep the prompt layers on top and the points layer active. napari makes a layer it
        adds (the objects, the automatic labels) the active one: the next click would then
        pan, or paint labels, instead of adding a point."""
        layers = [self._layer(name) for name in (PREVIEW, BOXES, POINTS)]
        if any(layer is None for layer in layers):
            return
        stack = self.viewer.layers
        if max(map(stack.index, layers)) != len(stack) - 1 or \
                min(map(stack.index, layers)) != len(stack) - 3:
            for layer in layers:  # keep their order, on top of everything
                stack.move(stack.index(layer), len(stack))
        stack.selection.active = layers[-1]

    @staticmethod
    def lead_index(target, image_layer, plane_index: tuple[int, ...]) -> tuple[int, ...]:
        """The index of ``target``'s axes before Y, X for the image plane ``plane_index``
        (:func:`planes.objects_index`)."""
        return planes.objects_index(plane_index, image_layer.data.ndim,
                                    _channel_axis(image_layer), target.data.ndim)

    def clear(self) -> None:
        self._muted = True
        try:
            for name in (POINTS, BOXES):
                layer = self._layer(name)
                if layer is not None and len(layer.data):
                    layer.data = np.zeros((0, 2)) if name == POINTS else []
        finally:
            self._muted = False
        self.show_preview([])


def _channel_axis(image_layer) -> int | None:
    return None if image_layer.rgb else image_layer.metadata.get("raysam_channel_axis")


def objects_layout(image_layer) -> tuple[tuple[int, ...], list[float], list[float]]:
    """Shape, scale and translate of the objects Labels layer of ``image_layer``
    (:func:`planes.objects_layout`: a channel axis that is not first stays with length 1)."""
    return planes.objects_layout(tuple(image_layer.data.shape), bool(image_layer.rgb),
                                 _channel_axis(image_layer), image_layer.scale,
                                 image_layer.translate)
