// Entry point; replaced as the component lands.
print("client")
