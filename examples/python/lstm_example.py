"""deeprnn.LSTM as a drop-in for torch.nn.LSTM: same arguments, same
state_dict, same outputs and gradients."""

import torch

import deeprnn

torch.manual_seed(0)
reference = torch.nn.LSTM(10, 20, num_layers=2, bidirectional=True)
lstm = deeprnn.LSTM(10, 20, num_layers=2, bidirectional=True)
lstm.load_state_dict(reference.state_dict())

x = torch.randn(5, 3, 10)  # (seq_len, batch, input_size)
x_ours = x.clone().requires_grad_()
x_ref = x.clone().requires_grad_()

output, (h_n, c_n) = lstm(x_ours)
ref_output, (ref_h_n, ref_c_n) = reference(x_ref)
torch.testing.assert_close(output, ref_output)
torch.testing.assert_close(h_n, ref_h_n)
torch.testing.assert_close(c_n, ref_c_n)

(output.pow(2).sum() + h_n.sum() + c_n.sum()).backward()
(ref_output.pow(2).sum() + ref_h_n.sum() + ref_c_n.sum()).backward()
torch.testing.assert_close(x_ours.grad, x_ref.grad)
ref_parameters = dict(reference.named_parameters())
for name, parameter in lstm.named_parameters():
    torch.testing.assert_close(parameter.grad, ref_parameters[name].grad)

print("output", tuple(output.shape))  # (5, 3, 40)
print("h_n", tuple(h_n.shape), "c_n", tuple(c_n.shape))  # (4, 3, 20) each
print("outputs and gradients match torch.nn.LSTM")
