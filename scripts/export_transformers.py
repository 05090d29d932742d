"""Exports small transformers models (random weights from a config, no download) the
way users do (torch.onnx.export, TorchScript exporter, opset 17, dynamic batch), each
with its inputs and onnxruntime's output in a .npz beside it; then

    python3 scripts/check_models.py --cairn target/release/cairn --device cpu OUT_DIR

checks cairn against onnxruntime on every one at batch 1 and 4. Text models take 16
tokens, the last 4 masked. Needs torch and transformers (4.46; not installed by
scripts/test). Usage:

    python3 scripts/export_transformers.py OUT_DIR [MODEL ...]
"""
import os, sys
import numpy as np, onnxruntime as ort, torch, transformers as T
torch.manual_seed(0)
out_dir = sys.argv[1]
os.makedirs(out_dir, exist_ok=True)
def text(cls, cfg, extra=None):
    def mk():
        m = cls(cfg).eval()
        class W(torch.nn.Module):
            def __init__(s): super().__init__(); s.m = m
            def forward(s, ids, mask): 
                o = s.m(input_ids=ids, attention_mask=mask)
                return o[0]
        ids = torch.randint(0, cfg.vocab_size, (1, 16))
        mask = torch.ones(1, 16, dtype=torch.int64); mask[0, 12:] = 0
        return W(), (ids, mask), ["input_ids", "attention_mask"], {"input_ids": {0: "N"}, "attention_mask": {0: "N"}}
    return mk
def vision(cls, cfg, shape, key="pixel_values"):
    def mk():
        m = cls(cfg).eval()
        class W(torch.nn.Module):
            def __init__(s): super().__init__(); s.m = m
            def forward(s, x): return s.m(**{key: x})[0]
        return W(), (torch.randn(*shape),), ["input"], {"input": {0: "N"}}
    return mk
small = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
specs = {
 "distilbert": text(T.DistilBertModel, T.DistilBertConfig(vocab_size=1000, dim=64, n_layers=2, n_heads=4, hidden_dim=128)),
 "gpt2": text(T.GPT2Model, T.GPT2Config(vocab_size=1000, n_embd=64, n_layer=2, n_head=4, n_positions=64)),
 "roberta": text(T.RobertaModel, T.RobertaConfig(vocab_size=1000, max_position_embeddings=64, **small)),
 "albert": text(T.AlbertModel, T.AlbertConfig(vocab_size=1000, embedding_size=32, **small)),
 "electra": text(T.ElectraModel, T.ElectraConfig(vocab_size=1000, embedding_size=32, **small)),
 "t5_encoder": text(T.T5EncoderModel, T.T5Config(vocab_size=1000, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4)),
 "llama": text(T.LlamaModel, T.LlamaConfig(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)),
 "deit": vision(T.DeiTModel, T.DeiTConfig(image_size=64, patch_size=8, **small), (1,3,64,64)),
 "swin": vision(T.SwinModel, T.SwinConfig(image_size=64, patch_size=4, embed_dim=32, depths=[1,1], num_heads=[2,4], window_size=4), (1,3,64,64)),
 "segformer": vision(T.SegformerModel, T.SegformerConfig(num_encoder_blocks=2, depths=[1,1], sr_ratios=[2,1], hidden_sizes=[16,32], num_attention_heads=[1,2], patch_sizes=[7,3], strides=[4,2], mlp_ratios=[2,2]), (1,3,64,64)),
 "mobilevit": vision(T.MobileViTModel, T.MobileViTConfig(image_size=64, hidden_sizes=[32,48,64], neck_hidden_sizes=[8,8,16,16,24,32,64]), (1,3,64,64)),
 "wav2vec2": vision(T.Wav2Vec2Model, T.Wav2Vec2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, conv_dim=(32,32,32), conv_stride=(5,2,2), conv_kernel=(10,3,3), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4), (1,4000), key="input_values"),
 "convnextv2": vision(T.ConvNextV2Model, T.ConvNextV2Config(hidden_sizes=[16,32,48,64], depths=[1,1,1,1]), (1,3,64,64)),
 "resnet_hf": vision(T.ResNetModel, T.ResNetConfig(hidden_sizes=[16,32,48,64], depths=[1,1,1,1], embedding_size=16), (1,3,64,64)),
 "whisper_encoder": vision(T.models.whisper.modeling_whisper.WhisperEncoder, T.WhisperConfig(d_model=64, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=128, num_mel_bins=16, max_source_positions=50), (1,16,100), key="input_features"),
}
for name in (sys.argv[2:] or list(specs)):
    try:
        m, args, names, dyn = specs[name]()
        path = f"{out_dir}/{name}.onnx"
        torch.onnx.export(m, args, path, input_names=names, output_names=["output"], dynamic_axes={**dyn, "output": {0: "N"}}, opset_version=17)
        feeds = {n: a.numpy() for n, a in zip(names, args)}
        s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        out = s.run(None, feeds)[0]
        m.eval()  # the exporter restores the wrapper's training mode
        with torch.no_grad(): ref = m(*args).numpy()
        np.savez(f"{out_dir}/{name}.npz", **{f"in:{n}": v for n, v in feeds.items()}, **{"out:output": out})
        print(name, "exported; ort vs torch", float(np.abs(out - ref).max()), flush=True)
    except Exception as e:
        print(name, "FAILED", repr(e)[:300], flush=True)
