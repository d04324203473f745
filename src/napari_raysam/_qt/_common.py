"""Small Qt helpers shared by the docks."""

from __future__ import annotations

import threading
from collections.abc import Callable

from qtpy.QtCore import QEvent, QObject, Signal
from qtpy.QtWidgets import QComboBox, QLabel

from napari_raysam.core.errors import RaysamError


class ViewerHooks:
    """The viewer events a dock listens to and the keys it binds, released together when the
    dock leaves napari (a plugin is a guest: nothing of it may outlive its dock)."""

    def __init__(self):
        self._events: list[tuple] = []
        self._keys: list[tuple] = []
        self._undo: list[Callable[[], None]] = []

    def on_release(self, undo: Callable[[], None]) -> None:
        """Run ``undo`` when the dock is released (e.g. give back a process-wide change)."""
        self._undo.append(undo)

    def connect(self, emitter, callback) -> None:
        emitter.connect(callback)
        self._events.append((emitter, callback))

    def bind_key(self, owner, key: str, func) -> None:
        owner.bind_key(key, func, overwrite=True)
        self._keys.append((owner, key, func))

    def release(self) -> None:
        for emitter, callback in self._events:
            try:
                emitter.disconnect(callback)
            except (RuntimeError, TypeError, ValueError):
                pass  # already gone with its owner
        for owner, key, func in self._keys:
            try:
                current = owner.bind_key(key, None)  # unbind; returns what was bound
                if current is not None and current is not func:  # bound since by someone else
                    owner.bind_key(key, current, overwrite=True)
            except (KeyError, TypeError, ValueError):
                pass
        for undo in self._undo:
            undo()
        self._events.clear()
        self._keys.clear()
        self._undo.clear()


class DockLifetime:
    """Mixin for a dock widget: ``release()`` runs once when napari removes the dock (the x
    button: its parent is set to None) or the widget is closed."""

    def event(self, event):
        if event.type() == QEvent.Type.ParentChange and self.parent() is None:
            self.release()
        return super().event(event)

    def closeEvent(self, event):
        self.release()
        super().closeEvent(event)

    def release(self) -> None:
        self.hooks.release()


def replace_items(combo: QComboBox, names: list[str]) -> None:
    """Show ``names`` in ``combo``, keeping the current one when it is still there; no
    signals while the items change."""
    current = combo.currentText()
    combo.blockSignals(True)
    combo.clear()
    combo.addItems(names)
    if current in names:
        combo.setCurrentText(current)
    combo.blockSignals(False)


# Not magicgui's/napari's layer ComboBox: napari syncs it by connecting the dock's reset_choices
# to the viewer and never disconnects it when the dock closes; this one goes with ViewerHooks.
class LayerCombo(QComboBox):
    """A combo box listing the viewer's layers of one type, kept in sync with the viewer."""

    def __init__(self, viewer, layer_type: str, hooks: ViewerHooks):
        super().__init__()
        self.viewer = viewer
        self.layer_type = layer_type
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
            hooks.connect(event, self.refresh)
        self.refresh()

    def layers(self) -> list:
        return [layer for layer in self.viewer.layers if type(layer).__name__ == self.layer_type]

    def refresh(self, _event=None):
        current = self.currentText()
        replace_items(self, [layer.name for layer in self.layers()])
        if self.currentText() != current:  # the chosen layer went away: say so once
            self.currentTextChanged.emit(self.currentText())

    def current_layer(self):
        name = self.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None


class ProfileCombo(QComboBox):
    """The saved cluster profiles (``local`` among them). The list is read again each time it
    opens, so a profile saved in the Train dock meanwhile is offered."""

    def __init__(self, profiles):
        super().__init__()
        self.profiles = profiles  # a core.cluster.ProfileStore
        self.setToolTip("cluster profiles are saved in the Train dock")
        self.refresh()

    def refresh(self) -> None:
        replace_items(self, [p.name for p in self.profiles.list()])

    def showPopup(self) -> None:  # noqa: N802 - Qt's name
        self.refresh()
        super().showPopup()

    def profile(self):
        """The chosen profile; RaysamError when it was deleted meanwhile (never another)."""
        name = self.currentText()
        found = next((p for p in self.profiles.list() if p.name == name), None)
        if found is None:
            raise RaysamError(f"The cluster profile {name!r} no longer exists; choose another "
                              "(profiles are saved in the Train dock).")
        return found


def unwrap(obj):
    """The object behind napari's ``PublicOnlyProxy``.

    A dock opened through napari's plugin machinery gets a proxy viewer, which hands out a
    new proxy object on every access to a layer: never compare layers with ``is``."""
    return getattr(obj, "__wrapped__", obj)


def same_layer(a, b) -> bool:
    """Whether ``a`` and ``b`` are the same layer (through proxies or not); None is no layer."""
    return a is not None and b is not None and unwrap(a) is unwrap(b)


def parse_channels(text: str) -> tuple[int, ...] | None:
    """'2,0,3' -> (2, 0, 3); '' -> None (the policy's default)."""
    text = text.strip()
    if not text:
        return None
    try:
        return tuple(int(part) for part in text.replace(" ", ",").split(",") if part)
    except ValueError:
        raise RaysamError(
            f"Channels {text!r} are not numbers: write them like '2,0,3' (at most 3)."
        ) from None


def spin(cls, low, high, value, step=None, decimals=None):
    """A QSpinBox/QDoubleSpinBox with its range, value and (optional) step and decimals."""
    box = cls()
    box.setRange(low, high)
    if decimals is not None:
        box.setDecimals(decimals)
    if step is not None:
        box.setSingleStep(step)
    box.setValue(value)
    return box


ERROR_STYLE, WARNING_STYLE = "color: #e05050;", "color: #e0a030;"


def show_status(label: QLabel, message: str, error: bool = False, warning: bool = False) -> None:
    """Show ``message`` in ``label``: red for an error, amber for a warning."""
    label.setText(message)
    label.setStyleSheet(ERROR_STYLE if error else WARNING_STYLE if warning else "")


def run_in_worker(func: Callable, args: tuple, done: Callable, error: Callable,
                  finished: Callable | None = None):
    """Run ``func(*args)`` in a napari thread worker; results and errors come back in Qt.

    A :class:`RaysamError` (a problem the user can fix) is caught in the worker and handed to
    ``error`` as a value, so napari shows no traceback dialog for it; anything else is a bug
    and also reaches napari's error notifications.
    """
    from napari.qt.threading import create_worker

    def guarded():
        try:
            return True, func(*args)
        except RaysamError as exc:
            return False, exc

    worker = create_worker(guarded, _start_thread=False)
    worker.returned.connect(lambda result: (done if result[0] else error)(result[1]))
    worker.errored.connect(error)
    if finished is not None:
        worker.finished.connect(finished)
    worker.start()
    return worker


def start_worker(workers: list, status: QLabel, message: str, func: Callable, args: tuple,
                 done: Callable, error: Callable, finished: Callable | None = None):
    """Say ``message`` in ``status`` and run ``func(*args)`` in a worker (:func:`run_in_worker`)
    that is kept in ``workers`` until it finishes (a dock detaches those when it goes)."""
    show_status(status, message)
    worker = run_in_worker(func, args, done, error, finished)
    workers.append(worker)
    worker.finished.connect(lambda: workers.remove(worker))
    return worker


def follow_run(record, index, head, on_event: Callable, on_failed: Callable) -> StreamThread:
    """Follow a run (``core.runs.follow``, history replayed) on a thread of its own; its events
    arrive in Qt as ``on_event``, a RaysamError as ``on_failed``."""
    from napari_raysam.core import runs

    stream = StreamThread(runs.follow, (record, index, True, 0.5, head))
    stream.item.connect(on_event)
    stream.failed.connect(on_failed)
    return stream.start()


class StreamThread(QObject):
    """Iterate ``gen_func(*args)`` on a thread of its own; items arrive in Qt as ``item``.

    Long-lived streams (following a run for hours) must not occupy napari's shared thread
    pool, which has one thread per core: other workers (cancel, fetch) would wait behind them.
    A :class:`RaysamError` arrives as ``failed``; ``quit()`` stops at the next item.
    """

    item = Signal(object)
    failed = Signal(object)

    def __init__(self, gen_func: Callable, args: tuple):
        super().__init__()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(gen_func, args), daemon=True)

    def start(self) -> StreamThread:
        self._thread.start()
        return self

    def quit(self) -> None:
        self._stop.set()

    def is_running(self) -> bool:
        return self._thread.is_alive()

    def _run(self, gen_func: Callable, args: tuple) -> None:
        try:
            for value in gen_func(*args):
                if self._stop.is_set():
                    return
                self.item.emit(value)
        except Exception as exc:  # noqa: BLE001 - reported in the dock, never a crash
            if not self._stop.is_set():
                self.failed.emit(exc)


SAM_MODULES = ("micro_sam.instance_segmentation", "micro_sam.prompt_based_segmentation",
               "segment_anything")
CLUSTER_MODULES = ("ray.job_submission",)


def preload(modules: tuple[str, ...]) -> None:
    """Import ``modules`` on the GUI thread when a dock opens: imported later by a worker,
    they would hold the GIL in long stretches (unmarshalling code) and stall napari.

    The cyclic garbage collector is paused meanwhile: what imports create lives on, and the
    full collections they set off cost ~1.5 s of the Segment dock's opening for nothing (the
    dock then freezes the heap, see :mod:`.gc_pauses`)."""
    import gc
    import importlib

    from napari_raysam._qt import guard_triton

    guard_triton()  # before torch is imported: the canvas (and its GL driver) exists now
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for name in modules:
            importlib.import_module(name)
    finally:
        if was_enabled:
            gc.enable()


def detach_workers(workers) -> None:
    """Disconnect every worker from its (possibly deleted) dock and stop streams; touches no
    Qt widget."""
    for worker in workers:
        if worker is None:
            continue
        for signal in ("item", "failed", "returned", "errored", "finished"):
            try:
                getattr(worker, signal).disconnect()
            except (AttributeError, TypeError, RuntimeError):
                pass
        if hasattr(worker, "quit"):
            worker.quit()
