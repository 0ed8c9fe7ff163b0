"""Request and response bodies, as they appear in the OpenAPI schema (with examples)."""

from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

Role = Literal["question", "answer"]
MAX_INPUTS = 2048    # texts per request (OpenAI's own limit)
MAX_CHARS = 20_000   # characters per text (the encoders read only the first pieces anyway)
MAX_K = 1000         # neighbours per search


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("empty text")
    return text


Text = Annotated[str, Field(min_length=1, max_length=MAX_CHARS, json_schema_extra={"pattern": r"\S"}),
                 AfterValidator(_not_blank)]
Texts = Annotated[list[Text], Field(min_length=1, max_length=MAX_INPUTS)]


class EmbeddingsRequest(BaseModel):
    """OpenAI's embeddings request; `model` names one of this model's encoders."""
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"input": ["Where can I fish by the river?"], "model": "seq2seq", "encoding_format": "float"}]})
    input: Union[Text, Texts] = Field(description="A text or a list of texts.")
    model: Optional[str] = Field(None, description="An encoder of the served model (default: the first).")
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="base64: the little-endian float32 bytes of each vector, base64-encoded.")
    dimensions: Optional[int] = Field(None, ge=1, description="Must equal the encoder's dimension when given.")
    user: Optional[str] = None


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: Union[list[float], str]


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage


class EmbedRequest(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"texts": ["Where can I fish by the river?", "Below the old mill."], "encoder": "seq2seq"}]})
    texts: Texts = Field(description="The texts to encode.")
    encoder: Optional[str] = Field(None, description="An encoder of the served model (default: the first).")


class EmbedResponse(BaseModel):
    encoder: str
    dim: int
    embeddings: list[list[float]] = Field(description="Unit-length vectors, one per text (cosine = dot product).")
    order_scores: list[Optional[float]] = Field(
        description="Per text, the probability that its words are out of natural order (null: no scorer).")


class SearchRequest(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"text": "Where can I fish by the river?", "k": 5, "role": "answer"}]})
    text: Optional[Text] = Field(None, description="Text to look up (give this or `vector`).")
    vector: Optional[list[float]] = Field(None, min_length=1, description="A vector of the encoder's dimension (normalised here).")
    k: int = Field(10, ge=1, le=MAX_K, description="How many neighbours.")
    encoder: Optional[str] = None
    role: Optional[Role] = Field(None, description="Only questions or only answers.")


class Hit(BaseModel):
    rank: int
    id: int
    score: float
    role: str
    text: str


class SearchResponse(BaseModel):
    encoder: str
    hits: list[Hit]


class DocumentIn(BaseModel):
    text: Text
    role: Optional[Role] = Field(None, description="Inferred from the text when absent ('?' ends a question).")
    dialogue: Optional[int] = Field(None, ge=0, description="Dialogue id (default: one new dialogue per request).")


class DocumentsRequest(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"documents": [{"text": "Is the ferry running today?", "role": "question"},
                       {"text": "Only until noon on Sundays.", "role": "answer"}]}]})
    documents: list[DocumentIn] = Field(min_length=1, max_length=MAX_INPUTS)


class DocumentsResponse(BaseModel):
    ids: list[int]
    rows: int = Field(description="Rows in the collection after this addition.")


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    encoders: dict[str, int] = Field(description="Encoder name → dimension.")
    model_fingerprint: str
    rows: Optional[int] = Field(None, description="Utterances searchable (null: no collection, embeddings only).")


class InvocationsResponse(BaseModel):
    predictions: list[dict[str, list[float]]]


class ErrorDetail(BaseModel):
    message: str
    type: str
    code: Optional[str] = None


class ErrorResponse(BaseModel):
    error: ErrorDetail
