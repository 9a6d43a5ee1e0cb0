"""The server's engine: one thread owns the model and the KV cache and runs every slot.

Continuous batching, as llama-server does it: each step decodes the next token of every
generating slot in one forward pass, then evaluates a chunk of a waiting prompt (one
micro-batch while streams are running, so a long prompt holds them up by one chunk at
most; up to ``n_batch`` tokens when nothing else is running).

Two rules keep a request's text independent of the traffic around it:

* the generation step runs under :func:`lamina.kernels.rows_computed_alone`, so each
  slot's token gets the arithmetic of a batch of one, whoever shares the pass;
* prompts are evaluated one sequence per pass, in micro-batches that start at multiples of
  ``n_ubatch`` from position 0 — the micro-batches ``lamina -p`` evaluates the same prompt in.

So a greedy completion of a fresh prompt is the one ``lamina -m MODEL -p PROMPT --temp 0``
prints. (A prompt that reuses part of a slot's cache starts its first chunk elsewhere, and
its logits may differ in the last bits, as with llama-server's ``cache_prompt``.)

HTTP handlers never touch the model: they :meth:`Engine.submit` a task and read its events,
and run slot actions through :meth:`Engine.call`, which runs them between two steps.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import threading
import time
from dataclasses import dataclass

import numpy as np

from lamina.engine.batch import Batch
from lamina.generation import STOP_LIMIT
from lamina.kernels import rows_computed_alone
from lamina.sampling import SamplingError

from .errors import ServerError, invalid_request, unavailable
from .protocol import check_token_ids
from .slots import GENERATING, PROMPT, Slot, common_prefix
from .tasks import CompletionTask, ErrorEvent, TaskHandle

log = logging.getLogger("lamina.server")

#: an idle slot is chosen for the prefix it shares with a prompt only above this (llama-server's --slot-prompt-similarity)
SLOT_PROMPT_SIMILARITY = 0.10


@dataclass
class EngineCounters:
    """What ``/metrics`` reports (llama-server's ``llamacpp:*`` counters)."""

    n_prompt_tokens_processed_total: int = 0
    t_prompt_processing_total: float = 0.0      # seconds
    n_tokens_predicted_total: int = 0
    t_tokens_generation_total: float = 0.0      # seconds
    n_decode_total: int = 0
    n_busy_slots_total: int = 0
    n_tokens_max: int = 0
    # since the last /metrics read, for the per-second gauges
    n_prompt_tokens_processed: int = 0
    t_prompt_processing: float = 0.0
    n_tokens_predicted: int = 0
    t_tokens_generation: float = 0.0

    def take_recent(self) -> tuple[float, float]:
        """Prompt and generation tokens per second since the last call."""
        prompt = self.n_prompt_tokens_processed / self.t_prompt_processing if self.t_prompt_processing else 0.0
        gen = self.n_tokens_predicted / self.t_tokens_generation if self.t_tokens_generation else 0.0
        self.n_prompt_tokens_processed = self.n_tokens_predicted = 0
        self.t_prompt_processing = self.t_tokens_generation = 0.0
        return prompt, gen


class Engine:
    """Runs completions for ``n_parallel`` slots of ``llm`` (a :class:`lamina.Llama` with that many sequences)."""

    def __init__(self, llm, *, queue_max: int = 64, context_shift: bool = False, n_predict_max: int = -1,
                 chain_for=None):
        self.llm = llm
        self.ctx = llm._ctx
        self.tokenizer = llm.tokenizer_
        self.n_ctx_slot = self.ctx.n_ctx_seq
        self.slots = [Slot(i, self.n_ctx_slot) for i in range(self.ctx.n_seq_max)]
        self.queue_max = queue_max
        self.context_shift = context_shift
        self.n_predict_max = n_predict_max
        self._chain_for = chain_for
        self.counters = EngineCounters()
        self._waiting: collections.deque[TaskHandle] = collections.deque()
        self._controls: collections.deque[tuple] = collections.deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="lamina-engine", daemon=True)
        self._next_task_id = 0

    # -- the HTTP side ------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def check_prompt(self, tokens: list[int]) -> None:
        """Refuse a prompt the engine could not run: empty, ids outside the vocabulary, or too long."""
        if not tokens:
            raise invalid_request("the prompt is empty: send at least one token (or text that tokenizes to one)")
        check_token_ids(tokens, self.tokenizer.n_vocab)
        if len(tokens) >= self.n_ctx_slot:
            raise ServerError(
                f"the request exceeds the available context size: the prompt has {len(tokens)} tokens and a slot "
                f"holds {self.n_ctx_slot} (leave room for at least one generated token, or start the server with a "
                f"larger -c or fewer slots -np)", "exceed_context_size_error",
                n_prompt_tokens=len(tokens), n_ctx=self.n_ctx_slot)

    def submit(self, task: CompletionTask, loop=None, events=None) -> TaskHandle:
        """Queue ``task``; its events arrive through the returned handle (into ``events`` if given).
        503 past ``queue_max`` waiting requests."""
        self.check_prompt(task.prompt_tokens)
        if not -1 <= task.id_slot < len(self.slots):
            raise invalid_request(f"id_slot {task.id_slot} does not exist: this server has slots 0..{len(self.slots) - 1}")
        if self.n_predict_max > 0 and (task.n_predict < 0 or task.n_predict > self.n_predict_max):
            task.n_predict = self.n_predict_max
        handle = TaskHandle(task, loop, events)
        handle.on_cancel = self._wake
        with self._cond:
            if self._stopping:
                raise unavailable("the server is shutting down")
            n_waiting = sum(not h.cancelled for h in self._waiting)
            if n_waiting >= self.queue_max:
                raise unavailable(f"the server is busy: {n_waiting} requests are already waiting for a slot "
                                  f"(--queue-max {self.queue_max}); try again shortly", retry_after=1)
            handle.id_task = self._next_task_id
            self._next_task_id += 1
            self._waiting.append(handle)
            self._cond.notify()
        return handle

    def call(self, fn) -> concurrent.futures.Future:
        """Run ``fn()`` on the engine thread between two steps (slot actions); its result through the future."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._cond:
            if self._stopping:
                raise unavailable("the server is shutting down")
            self._controls.append((fn, future))
            self._cond.notify()
        return future

    @property
    def n_waiting(self) -> int:
        return sum(not h.cancelled for h in list(self._waiting))

    @property
    def n_busy(self) -> int:
        return sum(not s.idle for s in self.slots)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the current step; every unfinished request ends with an error event."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify()

    # -- the engine thread ------------------------------------------------------------------------------
    def _has_work(self) -> bool:
        return bool(self._controls) or any(not s.idle for s in self.slots) or bool(self._waiting)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not self._has_work():
                    self._cond.wait()
                if self._stopping:
                    break
                controls = list(self._controls)
                self._controls.clear()
                starts = self._assign_waiting()
            for fn, future in controls:
                try:
                    future.set_result(fn())
                except BaseException as e:  # noqa: BLE001 (the caller gets it)
                    future.set_exception(e)
            for slot, handle in starts:  # sampler chains are built here, without the lock the HTTP side takes
                self._guarded(slot, lambda: self._start(slot, handle), handle)
            try:
                self._drop_cancelled()
                self._step()
            except Exception as e:  # noqa: BLE001 (a failed decode fails its requests, never the server)
                log.exception("engine step failed")
                self._fail_active(ServerError(f"internal error while decoding: {e}", "server_error"))
        self._shut_down()

    @property
    def alive(self) -> bool:
        """Whether the engine thread is running (it only ends when the server stops)."""
        return self._thread.is_alive()

    def _guarded(self, slot: Slot, fn, handle: TaskHandle | None = None) -> None:
        """Run one slot's part of a step; if it fails, only that slot's request fails.

        Sampling runs the request's own settings, so an error there (a logit bias that bans
        every token, say) is the client's: 400 for that request, and the other slots go on.
        """
        try:
            fn()
        except Exception as e:  # noqa: BLE001
            handle = handle or slot.handle
            if isinstance(e, (SamplingError, ValueError, OverflowError)):
                error = invalid_request(f"the request's sampling settings failed: {e}")
            else:
                log.exception("slot %d failed", slot.id)
                error = ServerError(f"internal error in slot {slot.id}: {type(e).__name__}: {e}", "server_error")
            if handle is not None:
                handle.push(ErrorEvent(error))
            if not slot.idle:
                slot.release()

    def _shut_down(self) -> None:
        error = unavailable("the server is shutting down")
        self._fail_active(error)
        with self._cond:
            waiting, self._waiting = list(self._waiting), collections.deque()
            controls, self._controls = list(self._controls), collections.deque()
        for handle in waiting:
            handle.push(ErrorEvent(error))
        for _, future in controls:
            future.set_exception(error)

    def _fail_active(self, error: ServerError) -> None:
        for slot in self.slots:
            if not slot.idle:
                slot.handle.push(ErrorEvent(error))
                slot.release()
                slot.forget()
                self.ctx.truncate(slot.id, 0)

    def _assign_waiting(self) -> list[tuple[Slot, TaskHandle]]:
        """Which waiting tasks (first come, first served) the idle slots take now; called with the lock
        held. Requests whose clients have gone are dropped from the queue wherever they are."""
        kept: collections.deque[TaskHandle] = collections.deque()
        starts: list[tuple[Slot, TaskHandle]] = []
        taken: set[int] = set()
        blocked = False  # once a task finds no idle slot, the later ones wait behind it, in order
        for handle in self._waiting:
            if handle.cancelled:
                continue
            slot = None if blocked else self._choose_slot(handle.task, taken)
            if slot is None:
                kept.append(handle)
                blocked = blocked or handle.task.id_slot < 0
                continue
            taken.add(slot.id)
            starts.append((slot, handle))
        self._waiting = kept
        return starts

    def _choose_slot(self, task: CompletionTask, taken: set[int]) -> Slot | None:
        if task.id_slot >= 0:
            slot = self.slots[task.id_slot]
            return slot if slot.idle and slot.id not in taken else None
        idle = [s for s in self.slots if s.idle and s.id not in taken]
        if not idle:
            return None
        if task.cache_prompt:
            # the slot of this very conversation: its cache is a prefix of the prompt (the next turn) or the
            # prompt a prefix of its cache (the same prompt again)
            same = [s for s in idle if s.same_conversation(task.prompt_tokens)]
            best = max(same, key=lambda s: s.similarity(task.prompt_tokens), default=None)
            if best is not None and best.similarity(task.prompt_tokens) > SLOT_PROMPT_SIMILARITY:
                return best
        # another conversation's slot is not taken over for the prefix they share: _start copies that prefix
        return min(idle, key=lambda s: s.t_last_used)  # least recently used

    def _start(self, slot: Slot, handle: TaskHandle) -> None:
        chain = self._chain_for(handle.task.params, handle.task.grammar)
        if handle.task.cache_prompt:
            self._borrow_prefix(slot, handle.task.prompt_tokens)
        slot.start(handle, chain, self.tokenizer)
        self.ctx.truncate(slot.id, slot.n_past)

    def _borrow_prefix(self, slot: Slot, prompt: list[int]) -> None:
        """Copy into ``slot`` the longest prefix of ``prompt`` that another slot's cache holds, when it is longer
        than what ``slot`` holds and more than ``SLOT_PROMPT_SIMILARITY`` of the prompt (llama.cpp's
        ``llama_memory_seq_cp``).

        Conversations that share a system prompt then each keep their own slot, instead of the
        next one taking over the slot that holds it, and a conversation's next turn still finds
        its whole history cached. The copied cells are the ones the other slot computed, so the
        rest of the prompt is evaluated exactly as if it had run in that slot.
        """
        donor = max((s for s in self.slots if s is not slot), key=lambda s: common_prefix(s.cache_tokens, prompt),
                    default=None)
        n = common_prefix(donor.cache_tokens, prompt) if donor is not None else 0
        if n <= common_prefix(slot.cache_tokens, prompt) or n <= SLOT_PROMPT_SIMILARITY * len(prompt):
            return
        keys, values = self.ctx.kv.export_seq(donor.id, n)
        self.ctx.kv.import_seq(slot.id, keys, values)
        slot.forget()
        slot.cache_tokens = list(prompt[:n])

    def _drop_cancelled(self) -> None:
        for slot in self.slots:
            if not slot.idle and slot.handle.cancelled:
                log.info("slot %d: client gone, request %s cancelled", slot.id, getattr(slot.handle, "id_task", "?"))
                slot.release()

    def _step(self) -> None:
        generating = [s for s in self.slots if s.state == GENERATING]
        if generating:
            self._decode_step(generating)
        prompting = sorted((s for s in self.slots if s.state == PROMPT), key=lambda s: s.t_start)
        budget = self.ctx.n_ubatch if any(s.state == GENERATING for s in self.slots) else self.ctx.n_batch
        for slot in prompting:
            if budget <= 0:
                break
            budget -= self._prompt_chunk(slot, budget)

    def _decode_step(self, slots: list[Slot]) -> None:
        ready = []
        for slot in slots:
            if slot.n_past >= self.n_ctx_slot and not self._make_room(slot):
                continue
            ready.append(slot)
        if not ready:
            return
        tokens = [s.pending_token for s in ready]
        batch = Batch(np.array(tokens, np.int32), np.array([s.n_past for s in ready], np.int32),
                      np.array([s.id for s in ready], np.int32), np.ones(len(ready), bool))
        t0 = time.perf_counter()
        with rows_computed_alone():
            logits = self.ctx.decode(batch)
        dt = time.perf_counter() - t0
        c = self.counters
        c.n_decode_total += 1
        c.n_busy_slots_total += len(ready)
        c.n_tokens_predicted_total += len(ready)
        c.n_tokens_predicted += len(ready)
        c.t_tokens_generation_total += dt
        c.t_tokens_generation += dt
        for i, slot in enumerate(ready):
            slot.evaluated([tokens[i]])
            self._guarded(slot, lambda: slot.sample(logits[i]))
            c.n_tokens_max = max(c.n_tokens_max, slot.n_past)

    def _make_room(self, slot: Slot) -> bool:
        """The slot's context is full: shift it (``--context-shift``) or end the completion there."""
        if not self.context_shift:
            slot.truncated = True
            slot.generation.stop_type = STOP_LIMIT
            slot.finish()
            return False
        n_prompt = len(slot.task.prompt_tokens)
        n_keep = n_prompt if slot.task.n_keep < 0 else slot.task.n_keep
        n_keep = min(n_keep + (1 if self.tokenizer.add_bos else 0), slot.n_past - 2)
        n_discard = (slot.n_past - n_keep) // 2
        self.ctx.shift(slot.id, n_keep, n_discard)
        slot.cache_tokens = slot.cache_tokens[:n_keep] + slot.cache_tokens[n_keep + n_discard:]
        slot.n_past -= n_discard
        slot.prompt_logits = None
        slot.truncated = True
        log.info("slot %d: context shift, kept %d, discarded %d", slot.id, n_keep, n_discard)
        return True

    def _prompt_chunk(self, slot: Slot, budget: int) -> int:
        """Evaluate up to ``budget`` tokens of ``slot``'s prompt in whole micro-batches; return how many."""
        prompt = slot.task.prompt_tokens
        if slot.ready_logits is not None:  # the same prompt as last time: its logits are kept
            self._guarded(slot, lambda: slot.prompt_done(slot.ready_logits))
            return 0
        ub = self.ctx.n_ubatch
        done = 0
        t0 = time.perf_counter()
        logits = None
        while slot.n_past < len(prompt) and done < budget:
            end = min(len(prompt), (slot.n_past // ub + 1) * ub)
            chunk = prompt[slot.n_past:end]
            last = end == len(prompt)
            batch = Batch.for_sequence(chunk, slot.n_past, slot.id)
            if not last:
                batch.output[:] = False
            logits = self.ctx.decode(batch)
            slot.evaluated(chunk)
            done += len(chunk)
        dt = time.perf_counter() - t0
        c = self.counters
        c.n_prompt_tokens_processed_total += done
        c.n_prompt_tokens_processed += done
        c.t_prompt_processing_total += dt
        c.t_prompt_processing += dt
        if slot.n_past == len(prompt):
            self._guarded(slot, lambda: slot.prompt_done(logits[-1]))
        return max(done, 1)

    # -- slot actions (run through ``call``) -----------------------------------------------------------------
    def erase_slot(self, slot_id: int) -> int:
        slot = self._idle_slot(slot_id)
        n = len(slot.cache_tokens)
        slot.forget()
        self.ctx.truncate(slot.id, 0)
        return n

    def _idle_slot(self, slot_id: int) -> Slot:
        if not 0 <= slot_id < len(self.slots):
            raise invalid_request(f"Invalid slot ID: slot {slot_id} does not exist (slots 0..{len(self.slots) - 1})")
        slot = self.slots[slot_id]
        if not slot.idle:
            raise invalid_request(f"slot {slot_id} is processing a request; try again when it is idle")
        return slot

    def slot_state(self, slot_id: int) -> tuple[list[int], list[np.ndarray], list[np.ndarray]]:
        """The tokens an idle slot's cache holds and their keys and values, per layer (for saving)."""
        slot = self._idle_slot(slot_id)
        keys, values = self.ctx.kv.export_seq(slot.id, len(slot.cache_tokens))
        return list(slot.cache_tokens), keys, values

    def load_slot_state(self, slot_id: int, tokens: list[int], keys: list[np.ndarray], values: list[np.ndarray]) -> None:
        """Put saved tokens, keys and values into an idle slot (400 when they do not fit it)."""
        slot = self._idle_slot(slot_id)
        if keys and keys[0].shape[1] != len(tokens):
            raise invalid_request(f"the saved slot holds {len(tokens)} tokens but keys for {keys[0].shape[1]}")
        try:
            self.ctx.kv.import_seq(slot.id, keys, values, what="saved slot")
        except ValueError as e:
            raise invalid_request(str(e)) from None
        slot.forget()
        slot.cache_tokens = list(tokens)

    def prefix_match(self, slot_id: int, tokens: list[int]) -> int:
        return common_prefix(self.slots[slot_id].cache_tokens, tokens)
