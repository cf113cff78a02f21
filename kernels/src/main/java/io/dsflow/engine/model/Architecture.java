package io.dsflow.engine.model;

/**
 * The transformer families dsflow runs. They share one forward pass that branches on the few places they differ:
 * <ul>
 *   <li>LLAMA: RMSNorm, rotary positions, SwiGLU MLP, optional attention biases (LLaMA-2, Vicuna, LLaMA-3.x);</li>
 *   <li>QWEN2: LLAMA plus q/k/v biases;</li>
 *   <li>OPT: LayerNorm with biases, learned absolute positions (offset 2), ReLU MLP, biases everywhere.</li>
 * </ul>
 */
public enum Architecture {
    LLAMA, QWEN2, OPT;

    public boolean usesRope() {
        return this != OPT;
    }
}
