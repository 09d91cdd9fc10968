"""A stand-in workflow that hosts a run's event stream the way ``AgentWorkflow`` will
(``temporalio.contrib.workflow_streams``, topic ``RUN_TOPIC``, ``RunEvent`` items),
so the API's server-sent events are tested against real Workflow Streams before the
agent workflow publishes them."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.contrib.workflow_streams import WorkflowStream

from schemas.events import RUN_TOPIC, RunEvent
from schemas.run import Reply
from schemas.workflow import MessageInput


@workflow.defn(name="ApiStreamStub", sandboxed=False)
class StreamStub:
    """Publishes its script at start; a message streams ``Hello`` ``there`` as deltas."""

    @workflow.init
    def __init__(self, script: list[RunEvent]) -> None:
        self.stream = WorkflowStream()
        self.events = self.stream.topic(RUN_TOPIC, type=RunEvent)
        self.done = False
        self.step = 0

    @workflow.run
    async def run(self, script: list[RunEvent]) -> None:
        for event in script:
            self.events.publish(event)
        await workflow.wait_condition(lambda: self.done)
        self.events.publish(RunEvent(kind="ended", state="done", status="completed"))
        # Let followers read the last event before the pollers are released.
        await workflow.sleep(timedelta(seconds=0.5))
        self.stream.detach_pollers()
        await workflow.wait_condition(workflow.all_handlers_finished)

    @workflow.update
    async def send_message(self, message: MessageInput) -> Reply:
        update = workflow.current_update_info()
        message_id = update.id if update is not None else ""
        self.step += 1
        turn = f"{self.step}.0"
        if message.text == "interleave":
            # Another message's turn, streamed and answered before this one's.
            self.events.publish(RunEvent(kind="delta", turn="0.0", text="other"))
            self.events.publish(RunEvent(kind="reply", text="other", message_id="someone-else"))
        if message.text == "retry":
            self.events.publish(RunEvent(kind="delta", turn=turn, text="Hel"))
            self.events.publish(RunEvent(kind="reset", turn=turn, text="attempt 1 failed"))
        for piece in ("Hello", " there"):
            self.events.publish(RunEvent(kind="delta", turn=turn, text=piece))
        self.events.publish(
            RunEvent(kind="reply", text="Hello there", message_id=message_id, step=self.step)
        )
        # The update's result races the subscriber's poll: let the events win.
        await workflow.sleep(timedelta(seconds=0.3))
        return Reply(message="Hello there", state="chat", status="active", accepted=True, step=1)

    @send_message.validator
    def _validate(self, message: MessageInput) -> None:
        if message.text == "refuse":
            raise ValueError("the run is waiting for an approval decision in state 'review'")

    @workflow.signal
    def finish(self) -> None:
        self.done = True
